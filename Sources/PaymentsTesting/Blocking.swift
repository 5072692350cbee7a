import Foundation

/// Runs blocking work (a `PaymentsConnection`, a sleep) on a thread of its own.
///
/// The Swift concurrency pool has as many threads as cores (two here); a
/// test that blocks one of them in `recv` while the server it talks to needs
/// the pool would deadlock once tests run in parallel.
public func blocking<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Swift.Result { try body() })
        }
    }
}
