/// The schema of paymentsd's database, as numbered migrations.
///
/// Money is INTEGER minor units; times are INTEGER Unix seconds; tables are
/// STRICT so a wrong type is an error instead of a silent conversion.
public enum Schema {
    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "operations",
            sql: """
                -- A mutating command in progress: its steps commit their recovery point
                -- here, and whatever is not finished is resumed at start-up and by the janitor.
                CREATE TABLE operations (
                    id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    deal_id TEXT,
                    recovery_point TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    next_attempt_at INTEGER,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    finished_at INTEGER
                ) STRICT;
                CREATE INDEX operations_unfinished ON operations(next_attempt_at) WHERE finished_at IS NULL;
                """),
        Migration(
            version: 2, name: "checkout",
            sql: """
                -- One row per checkout attempt of a deal. CREATED is an open checkout.
                CREATE TABLE payments (
                    payment_id TEXT PRIMARY KEY,
                    deal_id TEXT NOT NULL,
                    customer_ref TEXT NOT NULL,
                    mode TEXT NOT NULL CHECK (mode IN ('PAYMENT', 'SUBSCRIPTION')),
                    status TEXT NOT NULL CHECK (status IN
                        ('CREATED', 'PAID', 'PARTIALLY_REFUNDED', 'REFUNDED', 'EXPIRED', 'CANCELED', 'FAILED')),
                    currency TEXT NOT NULL,
                    amount_total INTEGER NOT NULL CHECK (amount_total >= 0),
                    amount_refunded INTEGER NOT NULL DEFAULT 0
                        CHECK (amount_refunded >= 0 AND amount_refunded <= amount_total),
                    success_url TEXT NOT NULL,
                    cancel_url TEXT NOT NULL,
                    -- mode, currency and items in canonical form: "the same checkout" for RETURN_EXISTING.
                    fingerprint TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    checkout_session_id TEXT UNIQUE,
                    checkout_url TEXT,
                    payment_intent_id TEXT,
                    subscription_id TEXT,
                    failure_reason TEXT,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT;
                -- Guarantee 1, enforced by the database as well as by the per-deal lock.
                CREATE UNIQUE INDEX payments_one_open_checkout_per_deal ON payments(deal_id) WHERE status = 'CREATED';
                CREATE INDEX payments_by_deal ON payments(deal_id, created_at, payment_id);

                -- The line items as bought: a product changed or deleted later changes nothing here.
                CREATE TABLE payment_items (
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    position INTEGER NOT NULL,
                    sku TEXT NOT NULL,
                    name TEXT NOT NULL,
                    quantity INTEGER NOT NULL CHECK (quantity > 0),
                    unit_amount INTEGER NOT NULL CHECK (unit_amount >= 0),
                    price_id TEXT NOT NULL,
                    PRIMARY KEY (payment_id, position)
                ) STRICT;

                CREATE TABLE payment_metadata (
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (payment_id, key)
                ) STRICT;

                -- Tracked SKUs. available = on_hand - reserved never goes below zero.
                CREATE TABLE stock (
                    sku TEXT PRIMARY KEY,
                    on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
                    reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
                    updated_at INTEGER NOT NULL
                ) STRICT;

                -- Stock held for a payment: HELD while its checkout is open, then COMMITTED or RELEASED.
                CREATE TABLE reservations (
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    sku TEXT NOT NULL REFERENCES stock(sku),
                    quantity INTEGER NOT NULL CHECK (quantity > 0),
                    state TEXT NOT NULL CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED')),
                    PRIMARY KEY (payment_id, sku)
                ) STRICT;

                -- One order per paid payment.
                CREATE TABLE orders (
                    order_id TEXT PRIMARY KEY,
                    payment_id TEXT NOT NULL UNIQUE REFERENCES payments(payment_id),
                    deal_id TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                ) STRICT;

                -- Guarantee 12: one row per state change, written in the transaction of the change.
                CREATE TABLE audit_events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    at INTEGER NOT NULL,
                    deal_id TEXT,
                    payment_id TEXT,
                    kind TEXT NOT NULL,
                    from_status TEXT NOT NULL DEFAULT '',
                    to_status TEXT NOT NULL DEFAULT '',
                    detail TEXT NOT NULL DEFAULT ''
                ) STRICT;
                CREATE INDEX audit_events_by_deal ON audit_events(deal_id, seq);
                CREATE TRIGGER audit_events_append_only_update BEFORE UPDATE ON audit_events
                    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
                CREATE TRIGGER audit_events_append_only_delete BEFORE DELETE ON audit_events
                    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

                -- Request idempotency (protocol.md section 5): per caller and key, the request's
                -- hash and the final response, kept 24 hours.
                CREATE TABLE idempotency_keys (
                    caller_uid INTEGER NOT NULL,
                    key TEXT NOT NULL,
                    request_hash BLOB NOT NULL,
                    response BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (caller_uid, key)
                ) STRICT;

                ALTER TABLE operations ADD COLUMN payment_id TEXT;
                -- What a step needs beyond the payment row (e.g. a session id to expire).
                ALTER TABLE operations ADD COLUMN detail TEXT;
                """),
        Migration(
            version: 3, name: "stripe_events",
            sql: """
                -- The webhook inbox (guarantee 10): a delivery is stored here under its event id before
                -- the call answers OK, then applied under its deal's lock, at most once. Only the fields
                -- paymentsd acts on are kept: the raw body carries personal data (customer_details).
                CREATE TABLE stripe_events (
                    event_id TEXT PRIMARY KEY,
                    type TEXT NOT NULL,
                    created INTEGER NOT NULL,
                    object_id TEXT NOT NULL,
                    deal_id TEXT,
                    payment_id TEXT,
                    object_status TEXT,
                    payment_status TEXT,
                    payment_intent_id TEXT,
                    state TEXT NOT NULL CHECK (state IN ('PENDING', 'APPLIED', 'IGNORED')),
                    note TEXT NOT NULL DEFAULT '',
                    received_at INTEGER NOT NULL,
                    applied_at INTEGER
                ) STRICT;
                CREATE INDEX stripe_events_pending ON stripe_events(received_at) WHERE state = 'PENDING';
                """),
        Migration(
            version: 4, name: "refunds",
            sql: """
                -- Guarantee 7: every refund of a payment, whoever started it. A refund paymentsd sends is
                -- a PENDING row first; Stripe's answer (or its webhook) settles it once. FAILED frees
                -- its amount again.
                CREATE TABLE refunds (
                    refund_id TEXT PRIMARY KEY,
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    amount INTEGER NOT NULL CHECK (amount > 0),
                    status TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
                    reason TEXT NOT NULL,
                    restock INTEGER NOT NULL DEFAULT 0 CHECK (restock IN (0, 1)),
                    -- PAYMENTSD: sent by this service; STRIPE: made outside it (the dashboard).
                    origin TEXT NOT NULL CHECK (origin IN ('PAYMENTSD', 'STRIPE')),
                    -- request (RefundPayment), late_payment (guarantee 5) or outside.
                    cause TEXT NOT NULL,
                    stripe_refund_id TEXT UNIQUE,
                    failure_reason TEXT,
                    -- The RefundPayment call that asked for it: a retry with the same key resumes this row.
                    caller_uid INTEGER,
                    request_key TEXT,
                    request_hash BLOB,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) STRICT;
                CREATE INDEX refunds_by_payment ON refunds(payment_id, created_at);
                CREATE UNIQUE INDEX refunds_by_request ON refunds(caller_uid, request_key) WHERE request_key IS NOT NULL;
                -- The sum of a payment's refunds that are not FAILED, pending ones included, never exceeds
                -- what was paid: checked by the insert itself, so no read-then-write can race past it.
                -- Refunds made at Stripe are facts to record, not requests to check (Stripe checked them).
                CREATE TRIGGER refunds_never_exceed_payment BEFORE INSERT ON refunds
                    WHEN NEW.origin = 'PAYMENTSD'
                        AND (SELECT coalesce(sum(amount), 0) FROM refunds
                             WHERE payment_id = NEW.payment_id AND status <> 'FAILED') + NEW.amount
                            > (SELECT amount_total FROM payments WHERE payment_id = NEW.payment_id)
                    BEGIN SELECT RAISE(ABORT, 'refund_exceeds_remaining'); END;

                -- A full refund marks the order refunded; its stock goes back at most once.
                ALTER TABLE orders ADD COLUMN refunded_at INTEGER;
                ALTER TABLE orders ADD COLUMN restocked_at INTEGER;

                -- The refunds an event names: one for refund.*, the charge's list for charge.refunded.
                CREATE TABLE stripe_event_refunds (
                    event_id TEXT NOT NULL REFERENCES stripe_events(event_id),
                    stripe_refund_id TEXT NOT NULL,
                    amount INTEGER NOT NULL,
                    status TEXT NOT NULL,
                    -- metadata[refund_id]: set on the refunds paymentsd sent.
                    refund_id TEXT,
                    failure_reason TEXT,
                    PRIMARY KEY (event_id, stripe_refund_id)
                ) STRICT;
                """),
        Migration(
            version: 5, name: "claims_and_subscriptions",
            sql: """
                -- Guarantee 6: unique names (slug:alice) a checkout holds for its deal, taken at fulfilment.
                -- HELD lives as long as the checkout; RELEASED rows are history.
                CREATE TABLE claims (
                    key TEXT NOT NULL,
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    deal_id TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('HELD', 'TAKEN', 'RELEASED')),
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (payment_id, key)
                ) STRICT;
                -- One holder per name, enforced by the database: a hold lives exactly as long as its open
                -- checkout (released only once Stripe has confirmed the expiry), so no clock is needed here.
                CREATE UNIQUE INDEX claims_one_holder ON claims(key) WHERE state IN ('HELD', 'TAKEN');

                -- Guarantee 2: one open subscription checkout per customer, across deals.
                CREATE UNIQUE INDEX payments_one_open_subscription_per_customer ON payments(customer_ref)
                    WHERE status = 'CREATED' AND mode = 'SUBSCRIPTION';

                -- The subscription a completed session made, and what the session charged (a
                -- subscription's amount is its Stripe prices', known only from Stripe).
                ALTER TABLE stripe_events ADD COLUMN subscription_id TEXT;
                ALTER TABLE stripe_events ADD COLUMN amount_total INTEGER;
                """),
        Migration(
            version: 6, name: "expiry_cause_and_session_attempts",
            sql: """
                -- Why an expiry was started. It alone chooses the final state (EXPIRED when the checkout ran
                -- out of time, CANCELED otherwise); a caller's cancel reason is text for the audit trail.
                ALTER TABLE operations ADD COLUMN cause TEXT;
                UPDATE operations SET cause = CASE detail
                        WHEN 'expired_by_time' THEN 'expired_by_time'
                        WHEN 'replaced' THEN 'replaced'
                        WHEN 'replaced_for_customer' THEN 'replaced_for_customer'
                        ELSE 'canceled' END
                    WHERE kind = 'expire_session';

                -- A session create that Stripe refused because its expires_at had gone stale (an outage
                -- longer than the margin) is sent again as a new attempt: the attempt number is part of
                -- its idempotency key, and the attempt gets a fresh expires_at.
                ALTER TABLE payments ADD COLUMN session_attempt INTEGER NOT NULL DEFAULT 0;
                """),
        Migration(
            version: 7, name: "reconciliation",
            sql: """
                -- How often Stripe was asked about an open checkout whose outcome no event settled, and
                -- when it may be asked again (the backoff doubles with each answer "still open").
                ALTER TABLE payments ADD COLUMN outcome_checks INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE payments ADD COLUMN outcome_next_check_at INTEGER;
                CREATE INDEX payments_open_by_age ON payments(created_at) WHERE status = 'CREATED';

                -- Where the Events API catch-up got to: the newest event applied, and when the list was
                -- last read to its end. One row.
                CREATE TABLE stripe_event_cursor (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    event_id TEXT,
                    event_created INTEGER,
                    reached_end_at INTEGER
                ) STRICT;
                """),
    ]
}
