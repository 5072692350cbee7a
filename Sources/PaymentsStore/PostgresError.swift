/// An error PostgreSQL (or libpq, for a connection that failed) reported.
///
/// Holds the server's message, its SQLSTATE and the statement's SQL, never the bound values:
/// those may be amounts, references or keys that do not belong in a log.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// The five-character SQLSTATE; empty when libpq itself failed (no connection, a lost one).
    public let sqlState: String
    public let message: String
    public let sql: String?
    /// Whether the connection was lost with this error: the pool drops it and opens a new one.
    public let connectionLost: Bool

    public init(sqlState: String, message: String, sql: String? = nil, connectionLost: Bool = false) {
        self.sqlState = sqlState
        self.message = message
        self.sql = sql
        self.connectionLost = connectionLost
    }

    /// SQLSTATEs paymentsd acts on (PostgreSQL's Appendix A).
    public static let uniqueViolation = "23505"
    public static let foreignKeyViolation = "23503"
    public static let checkViolation = "23514"
    /// What the schema's triggers raise: the refund cap, the append-only audit trail.
    public static let raisedByTrigger = "P0001"
    public static let serializationFailure = "40001"
    public static let deadlockDetected = "40P01"
    public static let lockNotAvailable = "55P03"
    public static let queryCanceled = "57014"
    public static let diskFull = "53100"
    public static let readOnlyTransaction = "25006"

    /// Two transactions of different hosts crossed: the later one is run again from the start.
    var isRetryable: Bool { self.sqlState == Self.serializationFailure || self.sqlState == Self.deadlockDetected }

    /// The server cannot be reached or is going away: class 08 (connection exception), 57P01-57P03
    /// (shut down, crashed, starting up), 53300 (too many connections), or libpq's own failure.
    var isUnreachable: Bool {
        self.connectionLost || self.sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300"].contains(self.sqlState)
    }

    public var description: String {
        var text = "PostgreSQL error \(self.sqlState.isEmpty ? "(no SQLSTATE)" : self.sqlState): \(self.message)"
        if let sql { text += " in <\(sql)>" }
        return text
    }
}
