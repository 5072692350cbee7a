/// The daemon's database: SQLite for one host (the embedded default), or PostgreSQL shared by the
/// paymentsd of several hosts. The engine sees one interface, and every query of the typed API
/// runs on both.
///
/// - SQLite (`SQLiteStore`): one writer on its own serial queue with group commit, readers on the
///   callers' threads.
/// - PostgreSQL (`PostgresStore`): a pool of connections, SERIALIZABLE writes run again when two
///   hosts crossed, and advisory locks (`advisoryLocks`) that serialise a deal across hosts.
public final class Store: Sendable {
    /// The deadline of the call a write is made for, set around each call's handler. A write that
    /// waits past it for the writer is not run, and its wait for another process's lock ends by then.
    @TaskLocal public static var callDeadline: ContinuousClock.Instant?

    private enum Backend: Sendable {
        case sqlite(SQLiteStore)
        case postgresql(PostgresStore)
    }

    private let backend: Backend

    /// Opens the SQLite database at `path`, creating it if needed, and migrates it.
    ///
    /// - Parameter onConditionChange: told when writes start failing for a storage reason and when
    ///   they work again (nil), once per change, so the daemon logs an episode once.
    /// - Throws: `StoreError.databaseNewerThanBinary` for a database written by
    ///   a newer paymentsd, `StoreError.readOnly` for a file it cannot write; `SQLiteError` when
    ///   the file cannot be opened.
    public init(
        path: String, migrator: Migrator = Migrator(), busyTimeoutMS: Int = 5000,
        onConditionChange: @escaping @Sendable (StorageTrouble?) -> Void = { _ in }
    ) throws {
        self.backend = .sqlite(
            try SQLiteStore(
                path: path, migrator: migrator, busyTimeoutMS: busyTimeoutMS, onConditionChange: onConditionChange))
    }

    /// Connects to PostgreSQL and migrates the database.
    ///
    /// - Throws: `StoreError.databaseNewerThanBinary` for a database a newer paymentsd migrated;
    ///   `PostgresError` when the server cannot be reached or refuses the connection.
    public init(
        postgres configuration: PostgresConfiguration,
        migrator: Migrator = Migrator(migrations: PostgresSchema.migrations),
        onConditionChange: @escaping @Sendable (StorageTrouble?) -> Void = { _ in }
    ) throws {
        self.backend = .postgresql(
            try PostgresStore(configuration: configuration, migrator: migrator, onConditionChange: onConditionChange))
    }

    /// What the store is, for logs: the SQLite file, or the PostgreSQL URI without its password.
    public var location: String {
        switch self.backend {
        case .sqlite(let store): store.path
        case .postgresql(let store): store.configuration.redactedURI
        }
    }

    /// The locks shared with the paymentsd of other hosts; nil for SQLite, which one host owns.
    public var advisoryLocks: PostgresAdvisoryLocks? {
        switch self.backend {
        case .sqlite: nil
        case .postgresql(let store): store.locks
        }
    }

    /// Runs `body` in one write transaction. Committed when `body` returns, rolled back when it throws.
    ///
    /// - Throws: `StorageTrouble` when the database cannot take the write (nothing was committed
    ///   that a restart would find), or when the call's deadline passed before the write could start.
    public func write<Result: Sendable>(_ body: @escaping @Sendable (any Connection) throws -> Result) async throws -> Result {
        switch self.backend {
        case .sqlite(let store): try await store.write(body)
        case .postgresql(let store): try await store.write(body)
        }
    }

    /// Runs `body` in one read transaction (a consistent snapshot).
    public func read<Result: Sendable>(_ body: @escaping @Sendable (any Connection) throws -> Result) async throws -> Result {
        switch self.backend {
        case .sqlite(let store): try await store.read(body)
        case .postgresql(let store): try await store.read(body)
        }
    }

    /// Why the database cannot take writes now, or nil when it can.
    public func trouble() async -> StorageTrouble? {
        switch self.backend {
        case .sqlite(let store): await store.trouble()
        case .postgresql(let store): await store.trouble()
        }
    }

    /// Write transactions committed since the store was opened; each holds one or more writes.
    public var committedTransactions: Int {
        switch self.backend {
        case .sqlite(let store): store.committedTransactions
        case .postgresql(let store): store.committedTransactions
        }
    }

    /// Writes committed since the store was opened (the ones that threw are not counted).
    public var committedWrites: Int {
        switch self.backend {
        case .sqlite(let store): store.committedWrites
        case .postgresql(let store): store.committedWrites
        }
    }

    /// SQLite's pragmas in force on the writer: (journal_mode, synchronous, foreign_keys).
    public func pragmas() async throws -> (journalMode: String, synchronous: Int, foreignKeys: Int) {
        switch self.backend {
        case .sqlite(let store): try await store.pragmas()
        case .postgresql: throw StoreError.pragmaRefused("pragmas (PostgreSQL has none)")
        }
    }
}
