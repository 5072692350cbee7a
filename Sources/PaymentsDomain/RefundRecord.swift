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
    /// Nil when the caller gave none.
    public var reason: RefundReason?
    public var restock: Bool
    public var origin: Origin
    /// `request`, `late_payment` or `outside`.
    public var cause: String
    public var stripeRefundID: String?
    public var failureReason: String?
    public var createdAt: Int64
    public var updatedAt: Int64
    /// The RefundPayment call that asked for it (its hash of method and payload), if any.
    public var requestHash: [UInt8]?

    public init(
        refundID: String, paymentID: String, amount: Int64, status: RefundStatus, reason: RefundReason?, restock: Bool,
        origin: Origin, cause: String, stripeRefundID: String?, failureReason: String?, createdAt: Int64,
        updatedAt: Int64, requestHash: [UInt8]?
    ) {
        self.refundID = refundID
        self.paymentID = paymentID
        self.amount = amount
        self.status = status
        self.reason = reason
        self.restock = restock
        self.origin = origin
        self.cause = cause
        self.stripeRefundID = stripeRefundID
        self.failureReason = failureReason
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.requestHash = requestHash
    }
}
