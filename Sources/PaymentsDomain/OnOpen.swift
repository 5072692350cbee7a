/// What CreateCheckout does when the deal (or, for a subscription, the customer) has an open checkout.
public enum OnOpen: Sendable, CaseIterable {
    /// The open checkout, when it asks for the same things; else `checkout_in_progress`.
    case returnExisting
    /// Expire the open checkout at Stripe, then open a new one.
    case replace
    /// `checkout_in_progress`.
    case reject
}
