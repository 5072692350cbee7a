import PaymentsStore
import Synchronization

/// Mutual exclusion per key (a deal, a customer), FIFO, bounded by deadlines.
///
/// A command takes its deal's key before it reads or changes the deal, so
/// two calls for one deal run one after the other while calls for other
/// deals run in parallel. Properties the rest of the daemon relies on:
/// - **FIFO per key**: a release hands the key straight to the longest waiter,
///   so no caller starves behind a stream of newer ones.
/// - **Bounded waits**: a waiter gives up at its deadline with `LockTimeout`
///   (the RPC layer answers `DEADLINE_EXCEEDED lock_timeout`), or when its
///   task is cancelled.
/// - **No growth**: a key is in the table only while someone holds or waits
///   for it.
/// - **Several keys**: a command that needs two takes them nested, in one
///   global order (customer before deal), so two commands can never wait for
///   each other.
/// - **Across hosts**: on PostgreSQL the holder of a key also takes it in `crossHost` (an advisory
///   lock of the shared database) before its body runs and lets it go after, so the paymentsd of
///   other hosts wait for it too; only one waiter per key of this process ever asks there.
public final class KeyedLockTable<Key: Hashable & Sendable>: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
        let timer: Task<Void, Never>?
    }

    /// A key is present exactly while it is held; its waiters queue behind the holder.
    private struct State {
        var queues: [Key: [Waiter]] = [:]
        var nextWaiterID: UInt64 = 0
    }

    private let state = Mutex(State())
    private let crossHost: PostgresAdvisoryLocks?

    public init(crossHost: PostgresAdvisoryLocks? = nil) {
        self.crossHost = crossHost
    }

    /// Keys held or waited for now; zero when the table is idle.
    public var trackedKeyCount: Int { self.state.withLock { $0.queues.count } }

    /// Callers waiting for `key` now (not counting its holder).
    public func waiterCount(_ key: Key) -> Int { self.state.withLock { $0.queues[key]?.count ?? 0 } }

    /// Runs `body` while holding `key`.
    ///
    /// - Throws: `LockTimeout` if the key is not granted before `deadline`,
    ///   `CancellationError` if the task is cancelled while waiting, or what
    ///   `body` throws (the key is released either way).
    public func withLock<Result>(
        _ key: Key, deadline: ContinuousClock.Instant, _ body: () async throws -> Result
    ) async throws -> Result {
        try await self.acquire(key, deadline: deadline)
        defer { self.release(key) }
        guard let crossHost = self.crossHost else { return try await body() }
        guard let lease = try await crossHost.lock(String(describing: key), until: deadline) else { throw LockTimeout() }
        return try await Self.holding(lease, in: crossHost, body)
    }

    /// Runs `body` with `lease` among the task's held leases (its writes check the server still
    /// grants them), then lets it go whether it returned or threw.
    private static func holding<Result>(
        _ lease: PostgresAdvisoryLocks.Lease, in crossHost: PostgresAdvisoryLocks, _ body: () async throws -> Result
    ) async throws -> Result {
        do {
            let result = try await PostgresAdvisoryLocks.$held.withValue(PostgresAdvisoryLocks.held + [lease]) {
                try await body()
            }
            await crossHost.unlock(lease)
            return result
        } catch {
            await crossHost.unlock(lease)
            throw error
        }
    }

    /// Runs `body` holding `key` when nobody holds or waits for it now; nil, without waiting, when
    /// it is taken.
    public func withLockIfFree<Result>(_ key: Key, _ body: () async throws -> Result) async throws -> Result? {
        let granted: Bool = self.state.withLock { state in
            guard state.queues[key] == nil else { return false }
            state.queues[key] = []
            return true
        }
        guard granted else { return nil }
        defer { self.release(key) }
        guard let crossHost = self.crossHost else { return try await body() }
        // Another host holding it is as busy as a local holder: the caller takes its slower path.
        guard let lease = try await crossHost.lockIfFree(String(describing: key)) else { return nil }
        return try await Self.holding(lease, in: crossHost, body)
    }

    private func acquire(_ key: Key, deadline: ContinuousClock.Instant) async throws {
        let waiterID: UInt64? = self.state.withLock { state in
            if state.queues[key] == nil {
                state.queues[key] = []
                return nil
            }
            state.nextWaiterID &+= 1
            return state.nextWaiterID
        }
        guard let waiterID else { return }  // granted at once

        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let timer = Task { [weak self] in
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    guard !Task.isCancelled else { return }
                    self?.abandon(key, waiterID, error: LockTimeout())
                }
                // Decide again under the lock: the holder may have released since the check above,
                // and a waiter queued behind nobody would never be woken.
                let grantedNow: Bool = self.state.withLock { state in
                    if state.queues[key] == nil {
                        state.queues[key] = []
                        return true
                    }
                    state.queues[key]!.append(Waiter(id: waiterID, continuation: continuation, timer: timer))
                    return false
                }
                if grantedNow {
                    timer.cancel()
                    continuation.resume()
                    return
                }
                // A cancellation or a deadline that came before the waiter was queued found nothing to remove.
                if Task.isCancelled {
                    self.abandon(key, waiterID, error: CancellationError())
                } else if ContinuousClock.now >= deadline {
                    self.abandon(key, waiterID, error: LockTimeout())
                }
            }
        } onCancel: {
            self.abandon(key, waiterID, error: CancellationError())
        }
    }

    /// Removes a waiter that gives up; a waiter already granted the key is left alone.
    private func abandon(_ key: Key, _ waiterID: UInt64, error: any Error) {
        let waiter: Waiter? = self.state.withLock { state in
            guard let index = state.queues[key]?.firstIndex(where: { $0.id == waiterID }) else { return nil }
            return state.queues[key]!.remove(at: index)
        }
        waiter?.timer?.cancel()
        waiter?.continuation.resume(throwing: error)
    }

    private func release(_ key: Key) {
        let next: Waiter? = self.state.withLock { state in
            guard var queue = state.queues[key] else {
                preconditionFailure("released a key that is not held")
            }
            if queue.isEmpty {
                state.queues[key] = nil
                return nil
            }
            let next = queue.removeFirst()
            state.queues[key] = queue
            return next
        }
        next?.timer?.cancel()
        next?.continuation.resume()
    }
}

/// A key of the lock table was not granted before the caller's deadline.
public struct LockTimeout: Error, Equatable, Sendable {
    public init() {}
}
