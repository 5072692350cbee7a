/// The fields of a Stripe Checkout Session that paymentsd uses, and no others.
///
/// Decoding ignores everything else, so personal data Stripe sends along
/// (`customer_details`: e-mail, name, address) and the `client_secret` are
/// never held in memory past parsing, let alone stored or logged. A status this
/// client does not know makes the answer undecodable (`StripeError.unavailable`):
/// paymentsd never guesses what a session it cannot read means.
public struct CheckoutSession: Decodable, Sendable, Equatable {
    /// Where the session is in its life.
    public enum Status: String, Decodable, Sendable, Equatable {
        case open
        case complete
        case expired
    }

    /// Whether the customer's money arrived.
    public enum PaymentStatus: String, Decodable, Sendable, Equatable {
        case paid
        /// Not yet: an asynchronous method (a bank debit) still settling, or nobody paid.
        case unpaid
        /// Nothing to charge (a 100 % discount, a trial): as good as paid.
        case noPaymentRequired = "no_payment_required"
    }

    public let id: String
    public let status: Status
    public let paymentStatus: PaymentStatus
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
