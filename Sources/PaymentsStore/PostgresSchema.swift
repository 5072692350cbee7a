/// The schema of paymentsd's database on PostgreSQL: the same tables, columns, constraints and
/// numbering as `Schema` (SQLite), spelled for PostgreSQL. A migration added to one is added to the
/// other with the same number, so a version means the same schema on both.
///
/// Money and times are BIGINT, as SQLite's INTEGER is 64 bits. Tables whose queries order by
/// insertion (`ORDER BY rowid` on SQLite) have a `rowid` identity column, so one query serves both.
/// Triggers raise SQLSTATE P0001, which the typed queries read as `ConstraintViolation.trigger`.
public enum PostgresSchema {
    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "operations",
            sql: """
                CREATE TABLE operations (
                    id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    deal_id TEXT,
                    recovery_point TEXT NOT NULL,
                    attempts BIGINT NOT NULL DEFAULT 0,
                    last_error TEXT,
                    next_attempt_at BIGINT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    finished_at BIGINT
                );
                CREATE INDEX operations_unfinished ON operations(next_attempt_at) WHERE finished_at IS NULL;
                """),
        Migration(
            version: 2, name: "checkout",
            sql: """
                CREATE TABLE payments (
                    payment_id TEXT PRIMARY KEY,
                    deal_id TEXT NOT NULL,
                    customer_ref TEXT NOT NULL,
                    mode TEXT NOT NULL CHECK (mode IN ('PAYMENT', 'SUBSCRIPTION')),
                    status TEXT NOT NULL CHECK (status IN
                        ('CREATED', 'PAID', 'PARTIALLY_REFUNDED', 'REFUNDED', 'EXPIRED', 'CANCELED', 'FAILED')),
                    currency TEXT NOT NULL,
                    amount_total BIGINT NOT NULL CHECK (amount_total >= 0),
                    amount_refunded BIGINT NOT NULL DEFAULT 0
                        CHECK (amount_refunded >= 0 AND amount_refunded <= amount_total),
                    success_url TEXT NOT NULL,
                    cancel_url TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    checkout_session_id TEXT UNIQUE,
                    checkout_url TEXT,
                    payment_intent_id TEXT,
                    subscription_id TEXT,
                    failure_reason TEXT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    rowid BIGINT GENERATED ALWAYS AS IDENTITY
                );
                -- Guarantee 1, enforced by the database as well as by the per-deal locks.
                CREATE UNIQUE INDEX payments_one_open_checkout_per_deal ON payments(deal_id) WHERE status = 'CREATED';
                CREATE INDEX payments_by_deal ON payments(deal_id, created_at, payment_id);

                CREATE TABLE payment_items (
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    position BIGINT NOT NULL,
                    sku TEXT NOT NULL,
                    name TEXT NOT NULL,
                    quantity BIGINT NOT NULL CHECK (quantity > 0),
                    unit_amount BIGINT NOT NULL CHECK (unit_amount >= 0),
                    price_id TEXT NOT NULL,
                    PRIMARY KEY (payment_id, position)
                );

                CREATE TABLE payment_metadata (
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (payment_id, key)
                );

                CREATE TABLE stock (
                    sku TEXT PRIMARY KEY,
                    on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
                    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
                    updated_at BIGINT NOT NULL
                );

                CREATE TABLE reservations (
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    sku TEXT NOT NULL REFERENCES stock(sku),
                    quantity BIGINT NOT NULL CHECK (quantity > 0),
                    state TEXT NOT NULL CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED')),
                    PRIMARY KEY (payment_id, sku)
                );

                CREATE TABLE orders (
                    order_id TEXT PRIMARY KEY,
                    payment_id TEXT NOT NULL UNIQUE REFERENCES payments(payment_id),
                    deal_id TEXT NOT NULL,
                    created_at BIGINT NOT NULL
                );

                -- Guarantee 12: one row per state change, written in the transaction of the change.
                CREATE TABLE audit_events (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    at BIGINT NOT NULL,
                    deal_id TEXT,
                    payment_id TEXT,
                    kind TEXT NOT NULL,
                    from_status TEXT NOT NULL DEFAULT '',
                    to_status TEXT NOT NULL DEFAULT '',
                    detail TEXT NOT NULL DEFAULT ''
                );
                CREATE INDEX audit_events_by_deal ON audit_events(deal_id, seq);
                CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$;
                CREATE TRIGGER audit_events_append_only_update BEFORE UPDATE OR DELETE ON audit_events
                    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
                CREATE TRIGGER audit_events_append_only_truncate BEFORE TRUNCATE ON audit_events
                    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

                CREATE TABLE idempotency_keys (
                    caller_uid BIGINT NOT NULL,
                    key TEXT NOT NULL,
                    request_hash BYTEA NOT NULL,
                    response BYTEA NOT NULL,
                    created_at BIGINT NOT NULL,
                    PRIMARY KEY (caller_uid, key)
                );

                ALTER TABLE operations ADD COLUMN payment_id TEXT;
                ALTER TABLE operations ADD COLUMN detail TEXT;
                """),
        Migration(
            version: 3, name: "stripe_events",
            sql: """
                CREATE TABLE stripe_events (
                    event_id TEXT PRIMARY KEY,
                    type TEXT NOT NULL,
                    created BIGINT NOT NULL,
                    object_id TEXT NOT NULL,
                    deal_id TEXT,
                    payment_id TEXT,
                    object_status TEXT,
                    payment_status TEXT,
                    payment_intent_id TEXT,
                    state TEXT NOT NULL CHECK (state IN ('PENDING', 'APPLIED', 'IGNORED')),
                    note TEXT NOT NULL DEFAULT '',
                    received_at BIGINT NOT NULL,
                    applied_at BIGINT
                );
                CREATE INDEX stripe_events_pending ON stripe_events(received_at) WHERE state = 'PENDING';
                """),
        Migration(
            version: 4, name: "refunds",
            sql: """
                CREATE TABLE refunds (
                    refund_id TEXT PRIMARY KEY,
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    amount BIGINT NOT NULL CHECK (amount > 0),
                    status TEXT NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
                    reason TEXT NOT NULL,
                    restock BIGINT NOT NULL DEFAULT 0 CHECK (restock IN (0, 1)),
                    origin TEXT NOT NULL CHECK (origin IN ('PAYMENTSD', 'STRIPE')),
                    cause TEXT NOT NULL,
                    stripe_refund_id TEXT UNIQUE,
                    failure_reason TEXT,
                    caller_uid BIGINT,
                    request_key TEXT,
                    request_hash BYTEA,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    rowid BIGINT GENERATED ALWAYS AS IDENTITY
                );
                CREATE INDEX refunds_by_payment ON refunds(payment_id, created_at);
                CREATE UNIQUE INDEX refunds_by_request ON refunds(caller_uid, request_key) WHERE request_key IS NOT NULL;
                -- The refund cap (guarantee 7), checked by the insert itself. The payment's row is locked
                -- first: two hosts inserting refunds of one payment take turns here, so the second sees
                -- the first's refund (or, under SERIALIZABLE, fails and is run again).
                CREATE FUNCTION refunds_never_exceed_payment() RETURNS trigger LANGUAGE plpgsql AS $$
                    DECLARE
                        total BIGINT;
                    BEGIN
                        IF NEW.origin = 'PAYMENTSD' THEN
                            SELECT amount_total INTO total FROM payments WHERE payment_id = NEW.payment_id FOR UPDATE;
                            IF (SELECT coalesce(sum(amount), 0) FROM refunds
                                WHERE payment_id = NEW.payment_id AND status <> 'FAILED') + NEW.amount > total THEN
                                RAISE EXCEPTION 'refund_exceeds_remaining';
                            END IF;
                        END IF;
                        RETURN NEW;
                    END $$;
                CREATE TRIGGER refunds_never_exceed_payment BEFORE INSERT ON refunds
                    FOR EACH ROW EXECUTE FUNCTION refunds_never_exceed_payment();

                ALTER TABLE orders ADD COLUMN refunded_at BIGINT;
                ALTER TABLE orders ADD COLUMN restocked_at BIGINT;

                CREATE TABLE stripe_event_refunds (
                    event_id TEXT NOT NULL REFERENCES stripe_events(event_id),
                    stripe_refund_id TEXT NOT NULL,
                    amount BIGINT NOT NULL,
                    status TEXT NOT NULL,
                    refund_id TEXT,
                    failure_reason TEXT,
                    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
                    PRIMARY KEY (event_id, stripe_refund_id)
                );
                """),
        Migration(
            version: 5, name: "claims_and_subscriptions",
            sql: """
                CREATE TABLE claims (
                    key TEXT NOT NULL,
                    payment_id TEXT NOT NULL REFERENCES payments(payment_id),
                    deal_id TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('HELD', 'TAKEN', 'RELEASED')),
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
                    PRIMARY KEY (payment_id, key)
                );
                -- Guarantee 6: one holder per name.
                CREATE UNIQUE INDEX claims_one_holder ON claims(key) WHERE state IN ('HELD', 'TAKEN');

                -- Guarantee 2: one open subscription checkout per customer, across deals.
                CREATE UNIQUE INDEX payments_one_open_subscription_per_customer ON payments(customer_ref)
                    WHERE status = 'CREATED' AND mode = 'SUBSCRIPTION';

                ALTER TABLE stripe_events ADD COLUMN subscription_id TEXT;
                ALTER TABLE stripe_events ADD COLUMN amount_total BIGINT;
                """),
        Migration(
            version: 6, name: "expiry_cause_and_session_attempts",
            sql: """
                ALTER TABLE operations ADD COLUMN cause TEXT;
                UPDATE operations SET cause = CASE detail
                        WHEN 'expired_by_time' THEN 'expired_by_time'
                        WHEN 'replaced' THEN 'replaced'
                        WHEN 'replaced_for_customer' THEN 'replaced_for_customer'
                        ELSE 'canceled' END
                    WHERE kind = 'expire_session';
                ALTER TABLE payments ADD COLUMN session_attempt BIGINT NOT NULL DEFAULT 0;
                """),
        Migration(
            version: 7, name: "reconciliation",
            sql: """
                ALTER TABLE payments ADD COLUMN outcome_checks BIGINT NOT NULL DEFAULT 0;
                ALTER TABLE payments ADD COLUMN outcome_next_check_at BIGINT;
                CREATE INDEX payments_open_by_age ON payments(created_at) WHERE status = 'CREATED';

                CREATE TABLE stripe_event_cursor (
                    id BIGINT PRIMARY KEY CHECK (id = 1),
                    event_id TEXT,
                    event_created BIGINT,
                    reached_end_at BIGINT
                );
                """),
    ]
}
