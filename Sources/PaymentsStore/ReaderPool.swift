import Synchronization

/// Read-only connections, each used by one caller at a time, on the caller's own thread.
///
/// A read runs where it is asked for, with no hop to a queue of its own and back: a read from the
/// page cache takes microseconds, less than the two thread switches a hop costs (BENCHMARKS.md,
/// issue 13). In WAL mode readers see the last commit and never wait for the writer, so a read
/// blocks its thread only for its own work. A caller finding every connection taken opens
/// another; there are never more than threads calling at once (the event loops, the janitor).
final class ReaderPool: Sendable {
    /// One connection, reachable only by the caller that took it from the free list.
    ///
    /// `@unchecked Sendable` is safe: a slot is in the free list (behind the pool's mutex) or held
    /// by exactly one caller between `take` and `give`, never both, so no two threads use its
    /// connection at once.
    final class Slot: @unchecked Sendable {
        let connection: SQLiteConnection
        init(_ connection: SQLiteConnection) { self.connection = connection }
    }

    private let free: Mutex<[Slot]>
    private let open: @Sendable () throws -> SQLiteConnection

    /// - Parameter open: opens and configures one more read-only connection.
    init(first: SQLiteConnection, open: @escaping @Sendable () throws -> SQLiteConnection) {
        self.free = Mutex([Slot(first)])
        self.open = open
    }

    /// Runs `body` on a connection no one else is using.
    func run<Result>(_ body: (SQLiteConnection) throws -> Result) throws -> Result {
        let slot = try self.free.withLock { $0.popLast() } ?? Slot(self.open())
        defer { self.free.withLock { $0.append(slot) } }
        return try body(slot.connection)
    }
}
