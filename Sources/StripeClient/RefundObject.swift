/// The fields of a Stripe Refund that paymentsd uses.
public struct RefundObject: Decodable, Sendable, Equatable {
    /// A refund's state at Stripe.
    public enum Status: String, Sendable, Equatable {
        case pending
        /// The customer must act before Stripe can go on; still pending for paymentsd.
        case requiresAction = "requires_action"
        case succeeded
        case failed
        case canceled

        /// Stripe will not change it again (short of a bank reversing a success).
        public var isFinal: Bool {
            switch self {
            case .succeeded, .failed, .canceled: true
            case .pending, .requiresAction: false
            }
        }
    }

    public let id: String
    public let amount: Int64?
    /// Nil when Stripe sent none this client knows: paymentsd then waits, as for `pending`.
    public let status: Status?
    /// Why a refund failed ("expired_or_canceled_card", "lost_or_stolen_card", "unknown").
    public let failureReason: String?
    /// `metadata[refund_id]`: the paymentsd refund this is, when paymentsd sent it.
    public let paymentsdRefundID: String?

    public init(id: String, amount: Int64?, status: Status?, failureReason: String? = nil, paymentsdRefundID: String? = nil) {
        self.id = id
        self.amount = amount
        self.status = status
        self.failureReason = failureReason
        self.paymentsdRefundID = paymentsdRefundID
    }

    private enum CodingKeys: String, CodingKey {
        case id, amount, status, metadata
        case failureReason = "failure_reason"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.id = try container.decode(String.self, forKey: .id)
        self.amount = try container.decodeIfPresent(Int64.self, forKey: .amount)
        self.status = try container.decodeIfPresent(String.self, forKey: .status).flatMap(Status.init(rawValue:))
        self.failureReason = try container.decodeIfPresent(String.self, forKey: .failureReason)
        self.paymentsdRefundID = try container.decodeIfPresent([String: String].self, forKey: .metadata)?["refund_id"]
    }
}
