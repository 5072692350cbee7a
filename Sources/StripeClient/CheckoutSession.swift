/// The fields of a Stripe Checkout Session that paymentsd uses, and no others.
///
/// Decoding ignores everything else, so personal data Stripe sends along
/// (`customer_details`: e-mail, name, address) and the `client_secret` are
/// never held in memory past parsing, let alone stored or logged.
public struct CheckoutSession: Decodable, Sendable, Equatable {
    public let id: String
    /// "open", "complete" or "expired".
    public let status: String?
    /// "paid", "unpaid" or "no_payment_required".
    public let paymentStatus: String?
    public let url: String?
    public let paymentIntent: String?
    /// The subscription a completed subscription-mode session made.
    public let subscription: String?
    /// What the session charges, in minor units.
    public let amountTotal: Int64?

    enum CodingKeys: String, CodingKey {
        case id, status, url, subscription
        case amountTotal = "amount_total"
        case paymentStatus = "payment_status"
        case paymentIntent = "payment_intent"
    }
}

/// Stripe's error body: `{"error": {"type", "code", "message"}}`.
struct StripeErrorBody: Decodable {
    struct Detail: Decodable {
        let type: String?
        let code: String?
        let message: String?
    }
    let error: Detail
}

/// The fields of a Stripe Refund that paymentsd uses.
public struct RefundObject: Decodable, Sendable, Equatable {
    public let id: String
    public let amount: Int64?
    /// "pending", "requires_action", "succeeded", "failed" or "canceled".
    public let status: String?
    /// Why a refund failed ("expired_or_canceled_card", "lost_or_stolen_card", "unknown").
    public let failureReason: String?
    /// `metadata[refund_id]`: the paymentsd refund this is, when paymentsd sent it.
    public let paymentsdRefundID: String?

    public init(id: String, amount: Int64?, status: String?, failureReason: String? = nil, paymentsdRefundID: String? = nil) {
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
        self.status = try container.decodeIfPresent(String.self, forKey: .status)
        self.failureReason = try container.decodeIfPresent(String.self, forKey: .failureReason)
        self.paymentsdRefundID = try container.decodeIfPresent([String: String].self, forKey: .metadata)?["refund_id"]
    }
}

/// One page of a Stripe list.
struct ListPage<Element: Decodable & Sendable>: Decodable, Sendable {
    let data: [Element]
    let has_more: Bool?
}
