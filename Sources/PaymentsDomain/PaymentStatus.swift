/// Where a payment is in its life (protocol.md "Payment states"), as stored and audited.
///
/// ```
///             +--> PAID --> PARTIALLY_REFUNDED --> REFUNDED
/// CREATED ----+--> EXPIRED | CANCELED | FAILED
/// ```
/// States only move forward (`canMove(to:)`); the one way back into PAID is a late payment
/// for a checkout paymentsd closed (guarantee 5).
public enum PaymentStatus: String, Sendable, CaseIterable {
    /// An open checkout: at most one per deal (guarantee 1).
    case created = "CREATED"
    case paid = "PAID"
    case partiallyRefunded = "PARTIALLY_REFUNDED"
    case refunded = "REFUNDED"
    case expired = "EXPIRED"
    case canceled = "CANCELED"
    case failed = "FAILED"

    /// The name as stored in the database and the audit trail ("CREATED").
    public var name: String { self.rawValue }

    public init?(name: String) { self.init(rawValue: name) }

    /// The forward moves of the state diagram; nothing ever moves back.
    public func canMove(to next: PaymentStatus) -> Bool {
        switch (self, next) {
        case (.created, .paid), (.created, .expired), (.created, .canceled), (.created, .failed):
            true
        case (.expired, .paid), (.canceled, .paid):
            true  // a late payment for a checkout paymentsd closed, whose stock could be held again
        case (.paid, .partiallyRefunded), (.paid, .refunded), (.partiallyRefunded, .refunded),
            (.partiallyRefunded, .partiallyRefunded):
            true
        case (.created, _), (.paid, _), (.partiallyRefunded, _), (.refunded, _), (.expired, _), (.canceled, _),
            (.failed, _):
            false
        }
    }

    /// Money was taken (and may since have gone back in part or whole).
    public var isSettledPaid: Bool {
        switch self {
        case .paid, .partiallyRefunded, .refunded: true
        case .created, .expired, .canceled, .failed: false
        }
    }
}
