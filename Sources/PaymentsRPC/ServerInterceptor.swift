/// A stage every call passes through between the dispatcher's checks and its handler, in the
/// order the dispatcher was given (grpc-swift's `ServerInterceptor`): request idempotency is one.
///
/// The payload is decoded and validated before the first stage runs, so a stage sees only calls
/// that will reach their handler; it may answer without calling `next` (a stored answer).
public protocol ServerInterceptor: Sendable {
    func intercept(
        payload: [UInt8], context: CallContext, next: @Sendable (CallContext) async throws -> [UInt8]
    ) async throws -> [UInt8]
}
