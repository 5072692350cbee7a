/// Stripe's error body: `{"error": {"type", "code", "message"}}`.
struct StripeErrorBody: Decodable {
    struct Detail: Decodable {
        let type: String?
        let code: String?
        let message: String?
    }
    let error: Detail
}
