import PaymentsDomain
import PaymentsStore

/// Where a call's final answer goes in the transaction of its operation's last step.
///
/// Request idempotency (protocol.md section 5) stores a call's answer under
/// its key. Stored after the effect, in a transaction of its own, a crash in
/// between would leave the effect without its answer, and a retry with the
/// key would get another one (`checkout_not_open` for a cancel that happened).
/// So the engine hands the answer to the transaction that commits the effect:
/// both are committed, or neither is.
public struct AnswerRecorder<Value>: Sendable {
    let success: @Sendable (any Connection, Value, Int64) throws -> Void
    let failure: @Sendable (any Connection, PaymentsError, Int64) throws -> Void

    /// - Parameters:
    ///   - success: stores the answer for `Value`, in the caller's transaction, at the given time.
    ///   - failure: stores a refusal that ends the call (`already_paid`, `stripe_rejected`).
    public init(
        success: @escaping @Sendable (any Connection, Value, Int64) throws -> Void,
        failure: @escaping @Sendable (any Connection, PaymentsError, Int64) throws -> Void
    ) {
        self.success = success
        self.failure = failure
    }
}

extension Optional {
    /// Records `value` as the call's answer, when the call has an answer to store.
    func record<Value>(_ db: any Connection, _ value: Value, now: Int64) throws where Wrapped == AnswerRecorder<Value> {
        try self?.success(db, value, now)
    }

    /// Records `error` as the call's answer, when the call has an answer to store.
    func record<Value>(_ db: any Connection, failure error: PaymentsError, now: Int64) throws where Wrapped == AnswerRecorder<Value> {
        try self?.failure(db, error, now)
    }
}
