/// How a Stripe call failed, in the two kinds callers act on.
public enum StripeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stripe answered and refused (a 4xx other than 409/429): retrying the same request cannot succeed.
    /// `code` is Stripe's error code (e.g. "parameter_unknown"), empty when it gave none.
    case rejected(status: Int, type: String, code: String, message: String)
    /// No usable answer: network error, timeout, 409/429/5xx after retries, or the circuit breaker
    /// is open. The outcome at Stripe is unknown; retry with the same idempotency key.
    case unavailable(reason: String)

    public var description: String {
        switch self {
        case .rejected(let status, let type, let code, let message):
            "Stripe rejected the request (HTTP \(status), \(type), \(code.isEmpty ? "no code" : code)): \(message)"
        case .unavailable(let reason):
            "Stripe unavailable: \(reason)"
        }
    }
}
