import PaymentsDomain


extension PaymentRecord {
    static let columns = """
        p.payment_id, p.deal_id, p.customer_ref, p.mode, p.status, p.currency, p.amount_total, p.amount_refunded,
        p.success_url, p.cancel_url, p.fingerprint, p.expires_at, p.checkout_session_id, p.checkout_url,
        p.payment_intent_id, p.subscription_id, p.failure_reason, o.order_id, p.created_at, p.updated_at,
        p.session_attempt
        """

    public static func select(_ condition: String) -> String {
        "SELECT \(Self.columns) FROM payments p LEFT JOIN orders o ON o.payment_id = p.payment_id WHERE \(condition)"
    }

    public static func load(_ db: any Connection, paymentID: String) throws -> PaymentRecord? {
        try db.query(Self.select("p.payment_id = ?"), arguments: [paymentID]).first.map { try Self.decode($0, db) }
    }

    /// The deal's latest payment.
    public static func latest(_ db: any Connection, dealID: String) throws -> PaymentRecord? {
        try db.query(
            Self.select("p.deal_id = ? ORDER BY p.created_at DESC, p.rowid DESC LIMIT 1"), arguments: [dealID]
        ).first.map { try Self.decode($0, db) }
    }

    /// The deal's payments, oldest first.
    public static func all(_ db: any Connection, dealID: String) throws -> [PaymentRecord] {
        try db.query(Self.select("p.deal_id = ? ORDER BY p.created_at, p.rowid"), arguments: [dealID]).map {
            try Self.decode($0, db)
        }
    }

    /// The customer's open subscription checkout, on whatever deal (at most one: a UNIQUE index says so).
    public static func openSubscription(_ db: any Connection, customerRef: String) throws -> PaymentRecord? {
        try db.query(
            Self.select("p.customer_ref = ? AND p.mode = 'SUBSCRIPTION' AND p.status = 'CREATED'"), arguments: [customerRef]
        ).first.map { try Self.decode($0, db) }
    }

    private static func decode(_ row: Row, _ db: any Connection) throws -> PaymentRecord {
        let paymentID = row.string(0)
        let items = try db.query(
            "SELECT sku, name, quantity, unit_amount, price_id FROM payment_items WHERE payment_id = ? ORDER BY position",
            paymentID
        ).map {
            LineItemRecord(sku: $0.string(0), name: $0.string(1), quantity: $0.int64(2), unitAmount: $0.int64(3), priceID: $0.string(4))
        }
        let metadata = try db.query("SELECT key, value FROM payment_metadata WHERE payment_id = ? ORDER BY key", paymentID)
            .map { MetadataEntry($0.string(0), $0.string(1)) }
        guard let mode = PaymentMode(name: row.string(3)), let status = PaymentStatus(name: row.string(4)) else {
            preconditionFailure("payment \(paymentID) holds a mode or status the schema's CHECK forbids")
        }
        return PaymentRecord(
            paymentID: paymentID, dealID: row.string(1), customerRef: row.string(2), mode: mode, status: status,
            currency: row.string(5), amountTotal: row.int64(6), amountRefunded: row.int64(7), successURL: row.string(8),
            cancelURL: row.string(9), fingerprint: row.string(10), expiresAt: row.int64(11), sessionAttempt: row.int(20),
            checkoutSessionID: row.optionalString(12), checkoutURL: row.optionalString(13),
            paymentIntentID: row.optionalString(14), subscriptionID: row.optionalString(15),
            failureReason: row.optionalString(16), orderID: row.optionalString(17), createdAt: row.int64(18),
            updatedAt: row.int64(19), items: items, metadata: metadata,
            claims: try ClaimLedger.keys(db, paymentID: paymentID), refunds: try RefundRecord.all(db, paymentID: paymentID))
    }

    /// Inserts a new CREATED payment with its items and metadata.
    public static func insert(_ db: any Connection, paymentID: String, request: CheckoutRequest, expiresAt: Int64, now: Int64) throws {
        try db.query(
            """
            INSERT INTO payments (payment_id, deal_id, customer_ref, mode, status, currency, amount_total, success_url,
                cancel_url, fingerprint, expires_at, created_at, updated_at)
            VALUES (?, ?, ?, ?, 'CREATED', ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            arguments: [
                paymentID, request.dealID, request.customerRef, request.mode.name, request.currency,
                request.amountTotal, request.successURL, request.cancelURL, request.fingerprint, expiresAt, now, now,
            ])
        for (position, item) in request.items.enumerated() {
            try db.query(
                "INSERT INTO payment_items VALUES (?, ?, ?, ?, ?, ?, ?)", paymentID, position, item.sku, item.name,
                item.quantity, item.unitAmount, item.priceID)
        }
        for entry in request.metadata {
            try db.query("INSERT INTO payment_metadata VALUES (?, ?, ?)", paymentID, entry.key, entry.value)
        }
    }

    /// Moves the payment from `from` to `to` and records it in the audit trail, in the caller's transaction.
    public static func transition(
        _ db: any Connection, _ payment: PaymentRecord, to: PaymentStatus, kind: String, detail: String = "",
        failureReason: String? = nil, now: Int64
    ) throws {
        precondition(payment.status.canMove(to: to), "\(payment.status.name) -> \(to.name) is not a payment transition")
        try db.query(
            """
            UPDATE payments SET status = ?, failure_reason = coalesce(?, failure_reason), updated_at = ?
            WHERE payment_id = ? AND status = ?
            """, to.name, failureReason, now, payment.paymentID, payment.status.name)
        precondition(db.changes == 1, "payment \(payment.paymentID) changed under the deal lock")
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: kind, from: payment.status.name,
            to: to.name, detail: detail, now: now)
    }

    /// The payment whose Stripe Checkout Session this is.
    public static func load(_ db: any Connection, checkoutSessionID: String) throws -> PaymentRecord? {
        try db.query(Self.select("p.checkout_session_id = ?"), arguments: [checkoutSessionID]).first.map {
            try Self.decode($0, db)
        }
    }

    /// The payment whose Stripe payment intent this is (recorded when its completion was applied).
    public static func load(_ db: any Connection, paymentIntentID: String) throws -> PaymentRecord? {
        try db.query(Self.select("p.payment_intent_id = ?"), arguments: [paymentIntentID]).first.map {
            try Self.decode($0, db)
        }
    }

    /// Records the session Stripe made for the payment.
    public static func recordSession(_ db: any Connection, paymentID: String, sessionID: String, url: String?, now: Int64)
        throws
    {
        try db.query(
            "UPDATE payments SET checkout_session_id = ?, checkout_url = ?, updated_at = ? WHERE payment_id = ?",
            sessionID, url, now, paymentID)
    }

    /// Records a new attempt of an open payment's session create; false when the payment is no
    /// longer open without a session.
    public static func startSessionAttempt(
        _ db: any Connection, paymentID: String, attempt: Int, expiresAt: Int64, now: Int64
    ) throws -> Bool {
        try db.query(
            """
            UPDATE payments SET session_attempt = ?, expires_at = ?, updated_at = ?
            WHERE payment_id = ? AND status = 'CREATED' AND checkout_session_id IS NULL
            """, attempt, expiresAt, now, paymentID)
        return db.changes == 1
    }

    /// Records what Stripe says of a checkout: its payment intent and subscription (kept once
    /// known), and what it charges: a subscription's prices' total, known only to Stripe, or nothing
    /// at all when a discount covers everything (`no_payment_required`).
    public static func recordSettlement(
        _ db: any Connection, paymentID: String, paymentIntentID: String?, subscriptionID: String?, amountTotal: Int64?
    ) throws {
        try db.query(
            """
            UPDATE payments SET payment_intent_id = coalesce(?, payment_intent_id),
                subscription_id = coalesce(?, subscription_id),
                amount_total = coalesce(?, amount_total)
            WHERE payment_id = ?
            """, paymentIntentID, subscriptionID, amountTotal, paymentID)
    }

    /// Records the subscription a payment made, unless one is recorded.
    public static func recordSubscription(_ db: any Connection, paymentID: String, subscriptionID: String) throws {
        try db.query(
            "UPDATE payments SET subscription_id = coalesce(subscription_id, ?) WHERE payment_id = ?", subscriptionID,
            paymentID)
    }

    public static func setFailureReason(_ db: any Connection, paymentID: String, _ reason: String, now: Int64) throws {
        try db.query("UPDATE payments SET failure_reason = ?, updated_at = ? WHERE payment_id = ?", reason, now, paymentID)
    }

    /// What the payment's SUCCEEDED refunds gave back, at most what was paid.
    public static func setAmountRefunded(_ db: any Connection, paymentID: String, _ amount: Int64, now: Int64) throws {
        try db.query(
            "UPDATE payments SET amount_refunded = ?, updated_at = ? WHERE payment_id = ?", amount, now, paymentID)
    }
}
