/// A payment as stored, with its line items and refunds.
public struct PaymentRecord: Sendable, Equatable {
    public var paymentID: String
    public var dealID: String
    public var customerRef: String
    public var mode: PaymentMode
    public var status: PaymentStatus
    public var currency: String
    public var amountTotal: Int64
    public var amountRefunded: Int64
    public var successURL: String
    public var cancelURL: String
    public var fingerprint: String
    public var expiresAt: Int64
    /// The attempt of the session create (0 for the first); part of its Stripe idempotency key.
    public var sessionAttempt: Int
    public var checkoutSessionID: String?
    public var checkoutURL: String?
    public var paymentIntentID: String?
    public var subscriptionID: String?
    public var failureReason: String?
    public var orderID: String?
    public var createdAt: Int64
    public var updatedAt: Int64
    public var items: [LineItemRecord]
    public var metadata: [MetadataEntry]
    /// The unique names it asked for (held, taken or released with it).
    public var claims: [String]
    /// Its refunds, oldest first.
    public var refunds: [RefundRecord]

    /// The Stripe prices and quantities of a subscription checkout (see `CheckoutRequest.prices`).
    public var prices: String { CheckoutRequest.prices(self.items) }

    public init(
        paymentID: String, dealID: String, customerRef: String, mode: PaymentMode, status: PaymentStatus,
        currency: String, amountTotal: Int64, amountRefunded: Int64, successURL: String, cancelURL: String,
        fingerprint: String, expiresAt: Int64, sessionAttempt: Int, checkoutSessionID: String?, checkoutURL: String?,
        paymentIntentID: String?, subscriptionID: String?, failureReason: String?, orderID: String?, createdAt: Int64,
        updatedAt: Int64, items: [LineItemRecord], metadata: [MetadataEntry], claims: [String], refunds: [RefundRecord]
    ) {
        self.paymentID = paymentID
        self.dealID = dealID
        self.customerRef = customerRef
        self.mode = mode
        self.status = status
        self.currency = currency
        self.amountTotal = amountTotal
        self.amountRefunded = amountRefunded
        self.successURL = successURL
        self.cancelURL = cancelURL
        self.fingerprint = fingerprint
        self.expiresAt = expiresAt
        self.sessionAttempt = sessionAttempt
        self.checkoutSessionID = checkoutSessionID
        self.checkoutURL = checkoutURL
        self.paymentIntentID = paymentIntentID
        self.subscriptionID = subscriptionID
        self.failureReason = failureReason
        self.orderID = orderID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.items = items
        self.metadata = metadata
        self.claims = claims
        self.refunds = refunds
    }
}
