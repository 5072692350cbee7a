import CSQLite
import CSystemShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One SQLite connection, closed when released.
///
/// Not Sendable: SQLite connections are used from one thread at a time: `SQLiteStore`
/// confines the writer to its serial queue and lends each reader to one caller.
public final class SQLiteConnection: Connection {
    let handle: OpaquePointer
    private let path: String
    private var statements: [String: Statement] = [:]
    private var busyTimeoutMS: Int32 = -1
    /// The write-ahead log's identity when first seen: SQLite notices a main file that moved, not a log.
    private var walIdentity: (device: UInt64, inode: UInt64)?
    /// The database's three files, opened for reading their attributes only.
    private var attributeDescriptors: [String: Int32] = [:]

    /// Opens the database at `path`, creating it if needed and `create` allows.
    public init(path: String, create: Bool = true) throws {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX
        let code = sqlite3_open_v2(path, &handle, flags, nil)
        guard code == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            throw SQLiteError(code: ResultCode(rawValue: code), message: message)
        }
        self.handle = handle
        self.path = path
        sqlite3_extended_result_codes(handle, 1)
    }

    /// Whether SQLite opened the database for reading only.
    var isReadOnly: Bool { sqlite3_db_readonly(self.handle, "main") == 1 }

    /// How long a statement waits for another process's lock before it fails with SQLITE_BUSY.
    func setBusyTimeout(milliseconds: Int) {
        let value = Int32(clamping: max(milliseconds, 0))
        guard value != self.busyTimeoutMS else { return }
        sqlite3_busy_timeout(self.handle, value)
        self.busyTimeoutMS = value
    }

    /// Whether a file of the database was made immutable (or append-only): SQLite maps its -shm
    /// file, and a write to that mapping would end the process with SIGBUS instead of an error.
    func isImmutable() -> Bool {
        for suffix in ["", "-wal", "-shm"] {
            let file = self.path + suffix
            if self.attributeDescriptors[file] == nil {
                let descriptor = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard descriptor >= 0 else { continue }
                self.attributeDescriptors[file] = descriptor
            }
            if let descriptor = self.attributeDescriptors[file], paymentsd_file_is_immutable(descriptor) != 0 { return true }
        }
        return false
    }

    /// Whether the file this connection writes is still the one at its path: false once the database
    /// or its write-ahead log was unlinked, renamed or replaced, when commits only reach a file that
    /// a restart will not find.
    func isStillAtItsPath() -> Bool {
        var moved: Int32 = 0
        if paymentsd_sqlite3_has_moved(self.handle, &moved) == SQLITE_OK, moved != 0 { return false }
        var info = stat()
        guard stat(self.path + "-wal", &info) == 0 else {
            // The log exists from the first transaction on, for as long as a connection is open.
            return self.walIdentity == nil && errno == ENOENT
        }
        let identity = (device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        guard let known = self.walIdentity else {
            self.walIdentity = identity
            return true
        }
        return known == identity
    }

    deinit {
        for descriptor in self.attributeDescriptors.values { close(descriptor) }
        self.statements.removeAll()
        sqlite3_close_v2(self.handle)
    }

    /// Runs one or more statements without parameters (schema, pragmas).
    public func executeScript(_ sql: String) throws {
        StatementCounter.run.add(1, ordering: .relaxed)
        let code = sqlite3_exec(self.handle, sql, nil, nil, nil)
        guard code == SQLITE_OK else { throw self.error(code, sql: sql) }
    }

    /// Runs one statement and returns its rows. Statements are prepared once per connection and cached.
    public func query(_ sql: String, arguments: [any SQLValueConvertible]) throws -> [Row] {
        StatementCounter.run.add(1, ordering: .relaxed)
        let statement = try self.statement(sql)
        try statement.bind(arguments)
        return try statement.rows()
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    public var changes: Int { Int(sqlite3_changes(self.handle)) }

    public var isInTransaction: Bool { sqlite3_get_autocommit(self.handle) == 0 }

    public var dialect: SQLDialect { .sqlite }

    public func beginStatement(immediate: Bool) -> String { immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED" }

    /// SQLite undoes a failed statement by itself and the transaction goes on.
    public func statementThatMayFail<Result>(_ body: () throws -> Result) throws -> Result { try body() }

    /// Runs a transaction statement (BEGIN, COMMIT, a savepoint) from the statement cache: every
    /// read and write runs two or more, and parsing them each time was a visible part of a read.
    public func control(_ sql: String) throws {
        StatementCounter.run.add(1, ordering: .relaxed)
        _ = try self.statement(sql).rows()
    }

    private func statement(_ sql: String) throws -> Statement {
        if let cached = self.statements[sql] { return cached }
        let statement = try Statement(connection: self, sql: sql)
        self.statements[sql] = statement
        return statement
    }

    func error(_ code: Int32, sql: String?) -> SQLiteError {
        // With extended codes on, sqlite3_errcode already returns the extended code.
        SQLiteError(
            code: ResultCode(rawValue: code == SQLITE_ERROR ? sqlite3_extended_errcode(self.handle) : code),
            message: String(cString: sqlite3_errmsg(self.handle)), sql: sql)
    }
}

@available(*, unavailable)
extension SQLiteConnection: Sendable {}
