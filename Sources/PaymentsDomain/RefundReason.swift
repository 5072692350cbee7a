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
