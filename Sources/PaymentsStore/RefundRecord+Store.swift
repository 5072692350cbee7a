import PaymentsDomain


extension RefundRecord {
    private static let select = """
        SELECT refund_id, payment_id, amount, status, reason, restock, origin, cause, stripe_refund_id, failure_reason,
            created_at, updated_at, request_hash
        FROM refunds
        """

    public static func load(_ db: any Connection, refundID: String) throws -> RefundRecord? {
        try db.query(Self.select + " WHERE refund_id = ?", refundID).first.map(Self.decode)
    }

    /// The payment's refunds, oldest first.
    public static func all(_ db: any Connection, paymentID: String) throws -> [RefundRecord] {
        try db.query(Self.select + " WHERE payment_id = ? ORDER BY created_at, rowid", paymentID).map(Self.decode)
    }

    public static func load(_ db: any Connection, stripeRefundID: String) throws -> RefundRecord? {
        try db.query(Self.select + " WHERE stripe_refund_id = ?", stripeRefundID).first.map(Self.decode)
    }

    /// The refund a caller's idempotency key asked for, however old.
    public static func load(_ db: any Connection, callerUID: UInt32, requestKey: String) throws -> RefundRecord? {
        try db.query(Self.select + " WHERE caller_uid = ? AND request_key = ?", Int64(callerUID), requestKey).first
            .map(Self.decode)
    }

    private static func decode(_ row: Row) -> RefundRecord {
        guard let status = RefundStatus(name: row.string(3)), let origin = Origin(rawValue: row.string(6)) else {
            preconditionFailure("refund \(row.string(0)) holds a status or origin the schema's CHECK forbids")
        }
        var hash: [UInt8]? = nil
        if case .blob(let bytes) = row[12] { hash = bytes }
        return RefundRecord(
            refundID: row.string(0), paymentID: row.string(1), amount: row.int64(2), status: status,
            reason: RefundReason(rawValue: row.string(4)), restock: row.int64(5) != 0, origin: origin,
            cause: row.string(7), stripeRefundID: row.optionalString(8), failureReason: row.optionalString(9),
            createdAt: row.int64(10), updatedAt: row.int64(11), requestHash: hash)
    }

    /// What the payment's refunds hold against its amount: every refund not FAILED, pending ones included.
    public static func committedAmount(_ db: any Connection, paymentID: String) throws -> Int64 {
        try db.queryFirst(
            "SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = ? AND status <> 'FAILED'", paymentID)!
            .int64(0)
    }

    /// What the payment's SUCCEEDED refunds gave back.
    public static func succeededAmount(_ db: any Connection, paymentID: String) throws -> Int64 {
        try db.queryFirst(
            "SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = ? AND status = 'SUCCEEDED'", paymentID)!
            .int64(0)
    }

    /// Who asked for a refund, when a RefundPayment call did: a retry with the same key finds it.
    public struct Caller: Sendable {
        public let uid: UInt32
        public let key: String
        public let requestHash: [UInt8]

        public init(uid: UInt32, key: String, requestHash: [UInt8]) {
            self.uid = uid
            self.key = key
            self.requestHash = requestHash
        }
    }

    /// Inserts a PENDING refund paymentsd will send. Returns false, inserting nothing, when it would
    /// take the payment's refunds past the amount paid: the insert's own trigger checks it, so no
    /// read before it can be raced.
    public static func insertPending(
        _ db: any Connection, refundID: String, paymentID: String, amount: Int64, reason: RefundReason?, restock: Bool,
        cause: String, caller: Caller?, now: Int64
    ) throws -> Bool {
        do {
            _ = try db.statementThatMayFail {
                try db.query(
                """
                INSERT INTO refunds (refund_id, payment_id, amount, status, reason, restock, origin, cause, caller_uid,
                    request_key, request_hash, created_at, updated_at)
                VALUES (?, ?, ?, 'PENDING', ?, ?, 'PAYMENTSD', ?, ?, ?, ?, ?, ?)
                """,
                arguments: [
                    refundID, paymentID, amount, reason?.rawValue ?? RefundReason.noneName, restock ? 1 : 0, cause,
                    caller.map { Int64($0.uid) }, caller?.key, caller.map { SQLValue.blob($0.requestHash) }, now, now,
                ])
            }
            return true
        } catch let error where ConstraintViolation.of(error) == .trigger {
            // The only trigger on refunds inserts: refunds_never_exceed_payment.
            return false
        }
    }

    /// Records a refund made outside paymentsd (the dashboard), as Stripe reported it.
    public static func insertOutside(
        _ db: any Connection, refundID: String, paymentID: String, amount: Int64, status: RefundStatus,
        stripeRefundID: String, failureReason: String?, now: Int64
    ) throws {
        try db.query(
            """
            INSERT INTO refunds (refund_id, payment_id, amount, status, reason, origin, cause, stripe_refund_id,
                failure_reason, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, 'STRIPE', 'outside', ?, ?, ?, ?)
            """,
            arguments: [
                refundID, paymentID, amount, status.name, RefundReason.noneName, stripeRefundID, failureReason, now, now,
            ])
    }

    /// Settles the refund's status with Stripe's id for it (kept once known) and failure reason.
    public static func settle(
        _ db: any Connection, refundID: String, status: RefundStatus, stripeRefundID: String?, failureReason: String?,
        now: Int64
    ) throws {
        try db.query(
            """
            UPDATE refunds SET status = ?, stripe_refund_id = coalesce(stripe_refund_id, ?), failure_reason = ?,
                updated_at = ?
            WHERE refund_id = ?
            """, status.name, stripeRefundID, failureReason, now, refundID)
    }

    /// Whether a refund of the payment that is not FAILED asked for its stock back.
    public static func restockWanted(_ db: any Connection, paymentID: String) throws -> Bool {
        try db.queryFirst(
            "SELECT 1 FROM refunds WHERE payment_id = ? AND restock = 1 AND status <> 'FAILED'", paymentID) != nil
    }

    /// Frees the caller's idempotency key of a refund whose key has expired: it may name a new request now.
    public static func forgetRequestKey(_ db: any Connection, refundID: String) throws {
        try db.query("UPDATE refunds SET request_key = NULL WHERE refund_id = ?", refundID)
    }

    /// Refunds Stripe left pending, last touched at or before `cutoff`, oldest first.
    public static func stalePending(_ db: any Connection, touchedBefore cutoff: Int64) throws
        -> [(refundID: String, stripeRefundID: String, dealID: String)]
    {
        try db.query(
            """
            SELECT r.refund_id, r.stripe_refund_id, p.deal_id FROM refunds r JOIN payments p USING (payment_id)
            WHERE r.status = 'PENDING' AND r.stripe_refund_id IS NOT NULL AND r.updated_at <= ?
            ORDER BY r.updated_at
            """, cutoff
        ).map { ($0.string(0), $0.string(1), $0.string(2)) }
    }

    /// Marks the refund as looked at now (asked about again only after another wait).
    public static func touch(_ db: any Connection, refundID: String, now: Int64) throws {
        try db.query("UPDATE refunds SET updated_at = ? WHERE refund_id = ?", now, refundID)
    }
}
