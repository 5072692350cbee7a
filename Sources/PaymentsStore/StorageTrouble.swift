/// Why the database cannot take a write now: conditions of the disk and the file, not bugs, which a
/// caller acts on by retrying later with the same idempotency key (protocol.md section 4).
///
/// The store turns SQLite's storage result codes into these at its boundary, so nothing above it
/// matches SQLite codes and no log line built from one carries a statement's text.
public enum StorageTrouble: Error, Equatable, Sendable, CustomStringConvertible {
    /// Another process holds the write lock for longer than a write may wait.
    case busy
    /// The disk (or the file system's quota) is full.
    case full
    /// The file or its directory can no longer be written.
    case readOnly
    /// An I/O error, a damaged file, or the file removed or replaced under the daemon.
    case unavailable(String)
    /// The call's deadline passed while the write waited for the writer: nothing was run.
    case deadlinePassed
    /// PostgreSQL cannot be reached now (stopped, restarting, the network). The store connects again
    /// by itself once the server is back. A write lost with its connection may have committed or not
    /// (its COMMIT may have been under way): a retry with the same idempotency key, or the janitor
    /// reading the operation's recovery point, finds out which.
    case unreachable(String)

    /// The trouble an SQLite error stands for, or nil when it is no storage condition (a constraint, a
    /// misuse: those are the caller's or the code's, and keep their SQLite error).
    static func of(_ error: SQLiteError) -> StorageTrouble? {
        let code = error.code
        if code ~= .busy || code ~= .locked { return .busy }
        if code ~= .full { return .full }
        if code ~= .readOnly { return .readOnly }
        if code ~= .ioError || code ~= .cantOpen || code ~= .protocolError || code ~= .noLargeFileSupport {
            return .unavailable("I/O error (\(code))")
        }
        if code ~= .corrupt || code ~= .notADatabase { return .unavailable("the database file is damaged (\(code))") }
        return nil
    }

    /// The trouble a PostgreSQL error stands for, or nil when it is none (a constraint, a bug).
    static func of(_ error: PostgresError) -> StorageTrouble? {
        if error.isUnreachable { return .unreachable(error.message) }
        switch error.sqlState {
        case PostgresError.diskFull: return .full
        // A standby, or a server whose default_transaction_read_only is on.
        case PostgresError.readOnlyTransaction: return .readOnly
        // lock_timeout or statement_timeout: another host's transaction holds what this one needs.
        case PostgresError.lockNotAvailable, PostgresError.queryCanceled: return .busy
        default: return nil
        }
    }

    /// Whether the condition lasts until the daemon restarts on a database it can use.
    public var isPermanent: Bool {
        switch self {
        case .busy, .full, .readOnly, .deadlinePassed, .unreachable: false
        case .unavailable: true
        }
    }

    public var description: String {
        switch self {
        case .busy: "database busy: another process holds its write lock"
        case .full: "database full: no space left for the write"
        case .readOnly: "database read-only: the file can no longer be written"
        case .unavailable(let detail): "database unavailable: \(detail)"
        case .deadlinePassed: "the call's deadline passed before its write reached the database"
        case .unreachable(let detail): "database unreachable: \(detail)"
        }
    }
}
