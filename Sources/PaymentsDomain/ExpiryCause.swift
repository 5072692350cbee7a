/// Why a checkout's session is being expired, as stored with its operation: the one thing
/// that chooses how the checkout ends.
///
/// A caller's cancel `reason` is free text for the audit trail; it never picks the final state.
public enum ExpiryCause: String, Sendable, CaseIterable {
    /// `CancelCheckout`.
    case canceled
    /// `CreateCheckout` with `on_open = REPLACE` on the same deal.
    case replaced
    /// A subscription checkout replacing the customer's open one on another deal.
    case replacedForCustomer = "replaced_for_customer"
    /// The janitor, for a checkout past its `expires_at` and grace.
    case expiredByTime = "expired_by_time"

    /// The checkout ran out of time (EXPIRED) or somebody closed it (CANCELED).
    public var finalStatus: PaymentStatus {
        switch self {
        case .expiredByTime: .expired
        case .canceled, .replaced, .replacedForCustomer: .canceled
        }
    }

    /// The audit kind of the final transition.
    public var auditKind: String {
        switch self {
        case .expiredByTime: "checkout.expired"
        case .canceled, .replaced, .replacedForCustomer: "checkout.canceled"
        }
    }

    /// The crash point between "expired at Stripe" and "released here".
    public var crashPoint: String {
        switch self {
        case .canceled: "cancel_checkout.session_expired"
        case .replaced: "create_checkout.replaced_session_expired"
        case .replacedForCustomer: "create_checkout.customer_session_replaced"
        case .expiredByTime: "janitor.session_expired"
        }
    }
}
