import PaymentsRPC
import PaymentsStore

/// A stage that gives the store the call's deadline (`Store.callDeadline`) for every write made for
/// the call, its stages' included: a write still queued when the caller stopped waiting is not run,
/// so a caller told `DEADLINE_EXCEEDED` was not also served, and a lock held by another process is
/// waited for only as long as the caller waits.
struct StoreDeadline: ServerInterceptor {
    func intercept(
        payload: [UInt8], context: CallContext, next: @Sendable (CallContext) async throws -> [UInt8]
    ) async throws -> [UInt8] {
        try await Store.$callDeadline.withValue(context.deadline) { try await next(context) }
    }
}
