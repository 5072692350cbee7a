/// A refund's state: PENDING until Stripe settles it, then SUCCEEDED or FAILED, once.
public enum RefundStatus: String, Sendable, CaseIterable {
    case pending = "PENDING"
    case succeeded = "SUCCEEDED"
    case failed = "FAILED"

    public var name: String { self.rawValue }

    public init?(name: String) { self.init(rawValue: name) }
}
