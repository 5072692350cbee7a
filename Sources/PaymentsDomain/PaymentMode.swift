/// What a checkout sells: a one-off payment, or a subscription to Stripe prices.
public enum PaymentMode: String, Sendable, CaseIterable {
    case payment = "PAYMENT"
    case subscription = "SUBSCRIPTION"

    /// The name as stored ("PAYMENT").
    public var name: String { self.rawValue }

    public init?(name: String) { self.init(rawValue: name) }
}
