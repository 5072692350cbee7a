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

    enum CodingKeys: String, CodingKey {
        case id, status, url
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
}
