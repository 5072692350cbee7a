import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's SQLite database: one writer, one reader, each on its own serial queue.
///
/// Every write runs on the writer's queue inside `BEGIN IMMEDIATE ... COMMIT`,
/// so writes are serialised in the process and SQLite never has to arbitrate
/// between writers. Reads run on a second connection; in WAL mode they see the
/// last committed state without blocking the writer. Blocking SQLite calls
/// (and fsyncs, with `synchronous=FULL`) stay off the Swift concurrency pool
/// and off the event loops.
public final class Store: Sendable {
    private let writer: ConfinedConnection
    private let reader: ConfinedConnection
    public let path: String

    /// Opens the database at `path`, creating it if needed, and migrates it.
    ///
    /// - Throws: `StoreError.databaseNewerThanBinary` for a database written by
    ///   a newer paymentsd; `SQLiteError` when the file cannot be opened.
    public init(path: String, migrator: Migrator = Migrator(), busyTimeoutMS: Int = 5000) throws {
        self.path = path
        let writer = try Connection(path: path)
        try Self.configure(writer, busyTimeoutMS: busyTimeoutMS)
        try migrator.migrate(writer, now: Int64(time(nil)))
        let reader = try Connection(path: path)
        try Self.configure(reader, busyTimeoutMS: busyTimeoutMS)
        try reader.executeScript("PRAGMA query_only = ON")
        self.writer = ConfinedConnection(writer, label: "paymentsd.store.writer")
        self.reader = ConfinedConnection(reader, label: "paymentsd.store.reader")
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction on the writer.
    /// Committed when `body` returns, rolled back when it throws.
    public func write<Result: Sendable>(_ body: @escaping @Sendable (Connection) throws -> Result) async throws -> Result {
        try await self.writer.run { connection in try connection.transaction(immediate: true) { try body(connection) } }
    }

    /// Runs `body` in one read transaction (a consistent snapshot) on the reader.
    public func read<Result: Sendable>(_ body: @escaping @Sendable (Connection) throws -> Result) async throws -> Result {
        try await self.reader.run { connection in try connection.transaction(immediate: false) { try body(connection) } }
    }

    /// Reports the pragmas in force on the writer: (journal_mode, synchronous, foreign_keys).
    public func pragmas() async throws -> (journalMode: String, synchronous: Int, foreignKeys: Int) {
        try await self.writer.run { connection in
            (
                try connection.queryFirst("PRAGMA journal_mode")!.string(0),
                try connection.queryFirst("PRAGMA synchronous")!.int(0),
                try connection.queryFirst("PRAGMA foreign_keys")!.int(0)
            )
        }
    }

    private static func configure(_ connection: Connection, busyTimeoutMS: Int) throws {
        try connection.executeScript("PRAGMA busy_timeout = \(busyTimeoutMS)")
        // journal_mode answers with the mode in force, which may not be the one asked for.
        let mode = try connection.queryFirst("PRAGMA journal_mode = WAL")?.string(0)
        guard mode == "wal" else { throw StoreError.pragmaRefused("journal_mode=WAL (got \(mode ?? "nothing"))") }
        // FULL: a commit that returned survives power loss; a payment is never forgotten.
        try connection.executeScript("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
    }
}

/// A connection used only on its own serial queue.
///
/// `@unchecked Sendable` is safe because `connection` is touched in exactly one
/// place, the block `run` submits to `queue`, and a serial queue runs one
/// block at a time; the connection never leaves that block.
private final class ConfinedConnection: @unchecked Sendable {
    private let connection: Connection
    private let queue: DispatchQueue

    init(_ connection: Connection, label: String) {
        self.connection = connection
        self.queue = DispatchQueue(label: label)
    }

    func run<Result: Sendable>(_ body: @escaping @Sendable (Connection) throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            self.queue.async {
                continuation.resume(with: Swift.Result { try body(self.connection) })
            }
        }
    }
}
