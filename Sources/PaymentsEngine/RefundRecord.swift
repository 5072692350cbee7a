import PaymentsStore
import PaymentsWire

/// A refund as stored: one the service sent, or one made at Stripe and learnt from its events.
public struct RefundRecord: Sendable, Equatable {
    public enum Origin: String, Sendable {
        /// Sent by paymentsd (RefundPayment, or a late payment's automatic refund).
        case paymentsd = "PAYMENTSD"
        /// Made outside the service (Stripe's dashboard) and recorded from its events.
        case stripe = "STRIPE"
    }

    public var refundID: String
    public var paymentID: String
    public var amount: Int64
    public var status: RefundStatus
    public var reason: RefundReason
    public var restock: Bool
    public var origin: Origin
    /// `request`, `late_payment` or `outside`.
    public var cause: String
    public var stripeRefundID: String?
    public var failureReason: String?
    public var createdAt: Int64
    public var updatedAt: Int64
    /// The RefundPayment call that asked for it (its hash of method and payload), if any.
    var requestHash: [UInt8]?

    private static let select = """
        SELECT refund_id, payment_id, amount, status, reason, restock, origin, cause, stripe_refund_id, failure_reason,
            created_at, updated_at, request_hash
        FROM refunds
        """

    public static func load(_ db: Connection, refundID: String) throws -> RefundRecord? {
        try db.query(Self.select + " WHERE refund_id = ?", refundID).first.map(Self.decode)
    }

    /// The payment's refunds, oldest first.
    public static func all(_ db: Connection, paymentID: String) throws -> [RefundRecord] {
        try db.query(Self.select + " WHERE payment_id = ? ORDER BY created_at, rowid", paymentID).map(Self.decode)
    }

    static func load(_ db: Connection, stripeRefundID: String) throws -> RefundRecord? {
        try db.query(Self.select + " WHERE stripe_refund_id = ?", stripeRefundID).first.map(Self.decode)
    }

    /// The refund a caller's idempotency key asked for, however old.
    static func load(_ db: Connection, callerUID: UInt32, requestKey: String) throws -> RefundRecord? {
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
            reason: RefundReason(name: row.string(4)) ?? .unspecified, restock: row.int64(5) != 0, origin: origin,
            cause: row.string(7), stripeRefundID: row.optionalString(8), failureReason: row.optionalString(9),
            createdAt: row.int64(10), updatedAt: row.int64(11), requestHash: hash)
    }
}
