/// The methods of service `payments.v1.Payments` (protocol.md section 4).
public enum MethodName: String, Sendable, CaseIterable {
    case createCheckout = "CreateCheckout"
    case getPayment = "GetPayment"
    case listPayments = "ListPayments"
    case confirmCheckout = "ConfirmCheckout"
    case cancelCheckout = "CancelCheckout"
    case refundPayment = "RefundPayment"
    case handleStripeEvent = "HandleStripeEvent"
    case setStock = "SetStock"
    case adjustStock = "AdjustStock"
    case getStock = "GetStock"
    case getClaim = "GetClaim"
    case releaseClaim = "ReleaseClaim"
    case listEvents = "ListEvents"
    case reconcile = "Reconcile"
    case health = "Health"
    case metrics = "Metrics"

    public static let servicePrefix = "payments.v1.Payments/"

    /// "payments.v1.Payments/<Name>", as sent in `Request.method`.
    public var fullName: String { Self.servicePrefix + self.rawValue }

    /// Parses a full method name; nil when it names no method of the service.
    public init?(fullName: String) {
        guard fullName.hasPrefix(Self.servicePrefix) else { return nil }
        self.init(rawValue: String(fullName.dropFirst(Self.servicePrefix.count)))
    }

    /// Methods whose calls are idempotent under the caller's key (protocol.md section 5): the
    /// answer is stored and a repeat with the key gets it back without anything done again.
    public var usesIdempotencyKey: Bool {
        switch self {
        case .createCheckout, .cancelCheckout, .refundPayment, .setStock, .adjustStock, .releaseClaim: true
        case .getPayment, .listPayments, .confirmCheckout, .handleStripeEvent, .getStock, .getClaim, .listEvents,
            .reconcile, .health, .metrics:
            false
        }
    }

    /// Methods refused without an idempotency key: a retry must never refund twice.
    public var requiresIdempotencyKey: Bool {
        switch self {
        case .refundPayment: true
        case .createCheckout, .cancelCheckout, .setStock, .adjustStock, .releaseClaim, .getPayment, .listPayments,
            .confirmCheckout, .handleStripeEvent, .getStock, .getClaim, .listEvents, .reconcile, .health, .metrics:
            false
        }
    }

    /// Methods that change money, stock or claims by an operator's decision
    /// (protocol.md section 6): callers need an admin group besides being allowed.
    public var requiresAdmin: Bool {
        switch self {
        case .refundPayment, .setStock, .adjustStock, .releaseClaim, .reconcile: true
        case .createCheckout, .getPayment, .listPayments, .confirmCheckout, .cancelCheckout,
            .handleStripeEvent, .getStock, .getClaim, .listEvents, .health, .metrics:
            false
        }
    }
}
