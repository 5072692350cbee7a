/// `payments.v1.Mode`.
public enum Mode: Int, Sendable, CaseIterable {
    case unspecified = 0
    case payment = 1
    case subscription = 2

    /// The name after the enum's prefix, as stored and shown ("PAYMENT").
    public var name: String {
        switch self {
        case .unspecified: "UNSPECIFIED"
        case .payment: "PAYMENT"
        case .subscription: "SUBSCRIPTION"
        }
    }

    public init?(name: String) {
        guard let mode = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = mode
    }
}

/// `payments.v1.OnOpen`: what CreateCheckout does when an open checkout exists.
public enum OnOpen: Int, Sendable, CaseIterable {
    case unspecified = 0
    case returnExisting = 1
    case replace = 2
    case reject = 3
}

/// `payments.v1.PaymentStatus`.
///
/// ```
///             +--> PAID --> PARTIALLY_REFUNDED --> REFUNDED
/// CREATED ----+--> EXPIRED | CANCELED | FAILED
/// ```
public enum PaymentStatus: Int, Sendable, CaseIterable {
    case unspecified = 0
    case created = 1
    case paid = 2
    case partiallyRefunded = 3
    case refunded = 4
    case expired = 5
    case canceled = 6
    case failed = 7

    /// The name after the enum's prefix, as stored in the database and the audit trail ("CREATED").
    public var name: String {
        switch self {
        case .unspecified: "UNSPECIFIED"
        case .created: "CREATED"
        case .paid: "PAID"
        case .partiallyRefunded: "PARTIALLY_REFUNDED"
        case .refunded: "REFUNDED"
        case .expired: "EXPIRED"
        case .canceled: "CANCELED"
        case .failed: "FAILED"
        }
    }

    public init?(name: String) {
        guard let status = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = status
    }
}

/// `payments.v1.EventOutcome`: what HandleStripeEvent did with a delivery.
public enum EventOutcome: Int, Sendable, CaseIterable {
    case unspecified = 0
    case applied = 1
    case duplicate = 2
    case ignored = 3
    /// Stored durably and applied later (by the janitor): never reported as applied when it was not.
    case queued = 4

    public var name: String {
        switch self {
        case .unspecified: "UNSPECIFIED"
        case .applied: "APPLIED"
        case .duplicate: "DUPLICATE"
        case .ignored: "IGNORED"
        case .queued: "QUEUED"
        }
    }
}

/// `payments.v1.RefundReason`: why money goes back, as Stripe records it.
public enum RefundReason: Int, Sendable, CaseIterable {
    case unspecified = 0
    case requestedByCustomer = 1
    case duplicate = 2
    case fraudulent = 3

    /// The name as stored and shown ("REQUESTED_BY_CUSTOMER").
    public var name: String {
        switch self {
        case .unspecified: "UNSPECIFIED"
        case .requestedByCustomer: "REQUESTED_BY_CUSTOMER"
        case .duplicate: "DUPLICATE"
        case .fraudulent: "FRAUDULENT"
        }
    }

    /// Stripe's `reason` parameter; nil for none.
    public var stripeValue: String? {
        switch self {
        case .unspecified: nil
        case .requestedByCustomer: "requested_by_customer"
        case .duplicate: "duplicate"
        case .fraudulent: "fraudulent"
        }
    }

    public init?(name: String) {
        guard let reason = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = reason
    }
}

/// `payments.v1.RefundStatus`.
public enum RefundStatus: Int, Sendable, CaseIterable {
    case unspecified = 0
    case pending = 1
    case succeeded = 2
    case failed = 3

    public var name: String {
        switch self {
        case .unspecified: "UNSPECIFIED"
        case .pending: "PENDING"
        case .succeeded: "SUCCEEDED"
        case .failed: "FAILED"
        }
    }

    public init?(name: String) {
        guard let status = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = status
    }
}

/// `payments.v1.ClaimState`: whether a unique name can still be had.
public enum ClaimState: Int, Sendable, CaseIterable {
    case unspecified = 0
    case free = 1
    case held = 2
    case taken = 3
}
