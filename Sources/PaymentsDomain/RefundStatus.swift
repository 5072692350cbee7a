/// A refund's state: PENDING until Stripe settles it, then SUCCEEDED or FAILED, once.
public enum RefundStatus: String, Sendable, CaseIterable {
    case pending = "PENDING"
    case succeeded = "SUCCEEDED"
    case failed = "FAILED"

    public var name: String { self.rawValue }

    public init?(name: String) { self.init(rawValue: name) }
}

/// Why money goes back, as Stripe records it. A refund may give none (stored as "UNSPECIFIED").
public enum RefundReason: String, Sendable, CaseIterable {
    case requestedByCustomer = "REQUESTED_BY_CUSTOMER"
    case duplicate = "DUPLICATE"
    case fraudulent = "FRAUDULENT"

    /// Stripe's `reason` parameter.
    public var stripeValue: String {
        switch self {
        case .requestedByCustomer: "requested_by_customer"
        case .duplicate: "duplicate"
        case .fraudulent: "fraudulent"
        }
    }

    /// The stored name of "no reason given".
    public static let noneName = "UNSPECIFIED"
}

/// Whether a unique name (`slug:alice`) can still be had (guarantee 6).
public enum ClaimState: Sendable, CaseIterable {
    case free
    case held
    case taken
}

/// One metadata entry of a checkout, passed to Stripe as `metadata[key]`.
public struct MetadataEntry: Sendable, Hashable {
    public var key: String
    public var value: String

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}
