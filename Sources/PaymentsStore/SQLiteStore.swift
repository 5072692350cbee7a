import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's SQLite database, the embedded store of one host: one writer on its own serial
/// queue, and readers.
///
/// Every write runs on the writer's queue inside `BEGIN IMMEDIATE ... COMMIT`,
/// so writes are serialised in the process and SQLite never has to arbitrate
/// between writers. Writes that queue up while a commit is under way share the
/// next transaction, each in its own savepoint (group commit, `GroupCommitWriter`).
/// Writes, and their fsyncs with `synchronous=FULL`, stay off the Swift
/// concurrency pool and off the event loops.
///
/// Reads run on connections of their own, on the caller's thread (`ReaderPool`);
/// in WAL mode they see the last committed state without blocking the writer.
final class SQLiteStore: Sendable {
    private let writer: GroupCommitWriter
    private let readers: ReaderPool
    private let counters: WriteBatch.Counters
    private let busyTimeoutMS: Int
    private let condition: StorageCondition
    /// When a reader last looked at the database file (ms of the continuous clock).
    private let lastFileCheck = Atomic<Int64>(-1_000_000)
    let path: String

    /// Opens the database at `path`, creating it if needed, and migrates it.
    ///
    /// - Parameter onConditionChange: told when writes start failing for a storage reason and when
    ///   they work again (nil), once per change, so the daemon logs an episode once.
    /// - Throws: `StoreError.databaseNewerThanBinary` for a database written by
    ///   a newer paymentsd, `StoreError.readOnly` for a file it cannot write; `SQLiteError` when
    ///   the file cannot be opened.
    init(
        path: String, migrator: Migrator = Migrator(), busyTimeoutMS: Int = 5000,
        onConditionChange: @escaping @Sendable (StorageTrouble?) -> Void = { _ in }
    ) throws {
        self.path = path
        self.busyTimeoutMS = busyTimeoutMS
        let condition = StorageCondition(onChange: onConditionChange)
        self.condition = condition
        let writer = try SQLiteConnection(path: path)
        // SQLite opens a file it may not write for reading only, and every write would fail later.
        guard !writer.isReadOnly else { throw StoreError.readOnly }
        try Self.configure(writer, busyTimeoutMS: busyTimeoutMS)
        try migrator.migrate(writer, now: Int64(time(nil)))
        // Readers made later never create the file: one that was removed is not made anew.
        let openReader: @Sendable (_ create: Bool) throws -> SQLiteConnection = { create in
            let reader = try SQLiteConnection(path: path, create: create)
            try Self.configure(reader, busyTimeoutMS: busyTimeoutMS)
            try reader.executeScript("PRAGMA query_only = ON")
            return reader
        }
        let first = try openReader(true)
        let counters = WriteBatch.Counters()
        self.counters = counters
        let batch = WriteBatch(counters: counters, condition: condition, busyTimeoutMS: busyTimeoutMS, path: path)
        self.writer = GroupCommitWriter(writer, label: "paymentsd.store.writer", batch: batch.commit)
        self.readers = ReaderPool(first: first, open: { try openReader(false) })
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on the writer.
    /// Committed when `body` returns, rolled back when it throws.
    ///
    /// - Throws: `StorageTrouble` when the database cannot take the write (nothing was committed
    ///   that a restart would find), or when the call's deadline passed before the write could start.
    func write<Result: Sendable>(_ body: @escaping @Sendable (any Connection) throws -> Result) async throws -> Result {
        // Only a write that was still in time when it was asked for is bound by the deadline: the
        // bookkeeping after a Stripe call that used the whole deadline must still be recorded, but
        // does not keep the caller waiting on another process's lock: if it cannot be had now, the
        // operation stays pending and the janitor finishes it.
        let wait: GroupCommitWriter.Wait =
            switch Store.callDeadline {
            case .none: .standard
            case .some(let deadline) where ContinuousClock.now < deadline: .until(deadline)
            case .some: .never
            }
        return try await self.writer.write(wait: wait, body)
    }

    /// Write transactions committed since the store was opened; each holds one or more writes.
    var committedTransactions: Int { self.counters.transactions.load(ordering: .relaxed) }
    /// Writes committed since the store was opened (the ones that threw are not counted).
    var committedWrites: Int { self.counters.writes.load(ordering: .relaxed) }

    /// Runs `body` in one read transaction (a consistent snapshot) on a reader, on this thread.
    func read<Result: Sendable>(_ body: @escaping @Sendable (any Connection) throws -> Result) async throws -> Result {
        do {
            return try self.readers.run { connection in
                self.checkFile(connection, force: false)
                // What the file held before it went away is no longer the daemon's state.
                if let trouble = self.condition.permanent { throw trouble }
                // A read marks the -shm file too.
                guard !connection.isImmutable() else { throw StorageTrouble.readOnly }
                return try connection.transaction(immediate: false) { try body(connection) }
            }
        } catch {
            throw self.condition.classify(error, recording: false)
        }
    }

    /// Why the database cannot take writes now, or nil when it can. Looks at the file itself too, so
    /// a database removed under an idle daemon is noticed (Health, the watchdog).
    ///
    /// A busy lock is asked again (can the write lock be had now?); a full disk or a read-only file
    /// passes with the next write that works, the janitor's at the latest.
    func trouble() async -> StorageTrouble? {
        if self.fileCheckIsDue() {
            try? self.readers.run { connection in self.checkFile(connection, force: true) }
        }
        if self.condition.current == .busy {
            try? await self.writer.alone { connection in
                guard self.condition.current == .busy else { return }
                connection.setBusyTimeout(milliseconds: 0)
                if (try? connection.transaction(immediate: true) {}) != nil { self.condition.recordSuccess() }
            }
        }
        return self.condition.current
    }

    /// Whether a second has passed since a reader last looked at the file: reads look at most that
    /// often (two system calls), so a read-heavy caller does not pay for it on every call.
    private static let clockOrigin = ContinuousClock.now

    private static func millisecondsNow() -> Int64 { Int64((ContinuousClock.now - Self.clockOrigin) / .milliseconds(1)) }

    private func fileCheckIsDue() -> Bool {
        let now = Self.millisecondsNow()
        return now - self.lastFileCheck.load(ordering: .relaxed) >= 1000
    }

    /// On a reader: notes a file that was removed or replaced (a write notices at once).
    private func checkFile(_ connection: SQLiteConnection, force: Bool) {
        guard force || self.fileCheckIsDue() else { return }
        self.lastFileCheck.store(Self.millisecondsNow(), ordering: .relaxed)
        if !connection.isStillAtItsPath(), self.condition.permanent == nil {
            _ = self.condition.record(.unavailable("the database file \(self.path) was removed or replaced"))
        }
    }

    /// Reports the pragmas in force on the writer: (journal_mode, synchronous, foreign_keys).
    func pragmas() async throws -> (journalMode: String, synchronous: Int, foreignKeys: Int) {
        try await self.writer.alone { connection in
            (
                try connection.queryFirst("PRAGMA journal_mode")!.string(0),
                try connection.queryFirst("PRAGMA synchronous")!.int(0),
                try connection.queryFirst("PRAGMA foreign_keys")!.int(0)
            )
        }
    }

    private static func configure(_ connection: SQLiteConnection, busyTimeoutMS: Int) throws {
        try connection.executeScript("PRAGMA busy_timeout = \(busyTimeoutMS)")
        // journal_mode answers with the mode in force, which may not be the one asked for.
        let mode = try connection.queryFirst("PRAGMA journal_mode = WAL")?.string(0)
        guard mode == "wal" else { throw StoreError.pragmaRefused("journal_mode=WAL (got \(mode ?? "nothing"))") }
        // FULL: a commit that returned survives power loss; a payment is never forgotten. No
        // memory-mapped reads: a file truncated or made immutable under the daemon is then an I/O
        // error SQLite reports, not a SIGBUS in the middle of a read.
        try connection.executeScript("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA mmap_size = 0;")
    }
}
