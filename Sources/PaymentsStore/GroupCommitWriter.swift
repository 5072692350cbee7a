import Dispatch
import Synchronization

/// One write waiting for the writer, whatever its result type, so writes share a transaction.
protocol QueuedWrite: AnyObject, Sendable {
    var wait: GroupCommitWriter.Wait { get }
    /// Runs the write's body inside its own savepoint; whether it succeeded. A body that threw has
    /// been rolled back to its savepoint and its error, passed through `classify`, kept.
    func run(_ connection: SQLiteConnection, classify: (any Error) -> any Error) -> Bool
    /// The error the write's own body threw, once it has run and failed.
    var ownError: (any Error)? { get }
    /// Answers the caller, once: its own error if its body threw, its result if its transaction
    /// committed, otherwise `error` (why the transaction did not commit).
    func finish(committed: Bool, error: (any Error)?)
}

/// The writer connection and the writes waiting for it. Writes that queue up while a transaction
/// commits go into the next one together (group commit): one `BEGIN IMMEDIATE`, a savepoint per
/// write, one `COMMIT`, so they share one fsync instead of taking one each.
///
/// Each write still behaves as if it ran alone, one after the other, in the order they were asked
/// for: it sees what the writes before it did, a write that throws rolls back to its savepoint
/// (its own work only), and no caller is answered before the shared `COMMIT` has returned. There
/// is no timer: a batch is whatever queued while the one before it ran.
///
/// `@unchecked Sendable` is safe: `connection` is touched only in blocks running on `queue`, a
/// serial queue that runs one block at a time; `pending` is behind its mutex.
final class GroupCommitWriter: @unchecked Sendable {
    /// How one write may wait for another process's write lock.
    enum Wait: Sendable, Equatable {
        /// Up to the store's busy timeout.
        case standard
        /// Until the call's deadline, and not run at all once it has passed.
        case until(ContinuousClock.Instant)
        /// Not at all: bookkeeping after the call's deadline runs only if the lock is free now.
        case never
    }

    /// At most this many writes share one transaction, so a commit's callers do not wait behind
    /// an unbounded batch.
    static let maxBatch = 64

    private let connection: SQLiteConnection
    private let queue: DispatchQueue
    private let pending = Mutex<(writes: [any QueuedWrite], draining: Bool)>(([], false))
    typealias Batch = @Sendable (SQLiteConnection, [any QueuedWrite], _ requeue: ([any QueuedWrite]) -> Void) -> Void
    private let batch: Batch

    /// - Parameter batch: runs one batch on the connection and answers every write in it, or hands
    ///   some back to `requeue` to run in the next batch; called on the writer's queue only.
    init(_ connection: SQLiteConnection, label: String, batch: @escaping Batch) {
        self.connection = connection
        self.queue = DispatchQueue(label: label)
        self.batch = batch
    }

    /// Queues `body` for the next transaction and waits for that transaction's end.
    func write<Result: Sendable>(
        wait: Wait, _ body: @escaping @Sendable (any Connection) throws -> Result
    ) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            let write = PendingWrite(wait: wait, body: body, continuation: continuation)
            let startDrain = self.pending.withLock { state in
                state.writes.append(write)
                guard !state.draining else { return false }
                state.draining = true
                return true
            }
            if startDrain { self.queue.async { self.drain() } }
        }
    }

    /// Runs `body` alone on the writer's connection, between batches (pragmas, a lock probe).
    func alone<Result: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            self.queue.async { continuation.resume(with: Swift.Result { try body(self.connection) }) }
        }
    }

    /// Puts writes a batch did not run back at the head of the queue, in their order, for the drain
    /// to take next.
    private func requeue(_ writes: [any QueuedWrite]) {
        guard !writes.isEmpty else { return }
        self.pending.withLock { state in state.writes.insert(contentsOf: writes, at: 0) }
    }

    /// On the queue: takes what has queued up, a batch at a time, until nothing is left.
    private func drain() {
        while true {
            let writes: [any QueuedWrite] = self.pending.withLock { state in
                guard !state.writes.isEmpty else {
                    state.draining = false
                    return []
                }
                let taken = Array(state.writes.prefix(Self.maxBatch))
                state.writes.removeFirst(taken.count)
                return taken
            }
            guard !writes.isEmpty else { return }
            self.batch(self.connection, writes, self.requeue)
        }
    }
}

/// `@unchecked Sendable` is safe: `result` is written by `run` and read by `finish`, both on the
/// writer's queue, one after the other; the other properties are immutable.
private final class PendingWrite<Result: Sendable>: QueuedWrite, @unchecked Sendable {
    let wait: GroupCommitWriter.Wait
    private let body: @Sendable (any Connection) throws -> Result
    private let continuation: CheckedContinuation<Result, any Error>
    private var result: Swift.Result<Result, any Error>?

    init(
        wait: GroupCommitWriter.Wait, body: @escaping @Sendable (any Connection) throws -> Result,
        continuation: CheckedContinuation<Result, any Error>
    ) {
        self.wait = wait
        self.body = body
        self.continuation = continuation
    }

    func run(_ connection: SQLiteConnection, classify: (any Error) -> any Error) -> Bool {
        do {
            self.result = .success(try connection.savepoint("write") { try self.body(connection) })
            return true
        } catch {
            self.result = .failure(classify(error))
            return false
        }
    }

    var ownError: (any Error)? {
        guard case .failure(let error)? = self.result else { return nil }
        return error
    }

    func finish(committed: Bool, error: (any Error)?) {
        switch self.result {
        case .failure(let own)?:
            self.continuation.resume(throwing: own)
        case .success(let value)? where committed:
            self.continuation.resume(returning: value)
        case .success?, nil:
            self.continuation.resume(throwing: error ?? StorageTrouble.unavailable("the write was not committed"))
        }
    }
}
