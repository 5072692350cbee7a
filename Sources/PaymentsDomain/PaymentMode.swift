/// What a checkout sells: a one-off payment, or a subscription to Stripe prices.
public enum PaymentMode: String, Sendable, CaseIterable {
    case payment = "PAYMENT"
    case subscription = "SUBSCRIPTION"

    /// The name as stored ("PAYMENT").
    public var name: String { self.rawValue }

    public init?(name: String) { self.init(rawValue: name) }
}

/// What CreateCheckout does when the deal (or, for a subscription, the customer) has an open checkout.
public enum OnOpen: Sendable, CaseIterable {
    /// The open checkout, when it asks for the same things; else `checkout_in_progress`.
    case returnExisting
    /// Expire the open checkout at Stripe, then open a new one.
    case replace
    /// `checkout_in_progress`.
    case reject
}
