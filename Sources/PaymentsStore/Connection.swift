import Synchronization

/// Which SQL a connection speaks, for the few statements the two databases spell differently
/// (the schema, its version table). Every query of the typed API is written once, in the SQL both
/// accept.
public enum SQLDialect: Sendable, Equatable {
    case sqlite
    case postgresql
}

/// A database connection as the typed queries see it: statements with `?` parameters, rows of
/// `SQLValue`s, transactions and savepoints. `SQLiteConnection` and `PostgresConnection` are the two.
///
/// Not Sendable: a connection is used by one caller at a time, which its store guarantees.
public protocol Connection: AnyObject {
    var dialect: SQLDialect { get }
    /// Runs one statement and returns its rows.
    func query(_ sql: String, arguments: [any SQLValueConvertible]) throws -> [Row]
    /// Runs one or more statements without parameters (schema).
    func executeScript(_ sql: String) throws
    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { get }
    var isInTransaction: Bool { get }
    /// Runs a transaction statement (BEGIN, COMMIT, a savepoint).
    func control(_ sql: String) throws
    /// The statement that opens a transaction; `immediate` takes SQLite's write lock at once.
    func beginStatement(immediate: Bool) -> String
    /// Runs a statement whose failure the caller handles (a constraint it expects): PostgreSQL ends
    /// the whole transaction at a failed statement unless it ran in a savepoint, SQLite does not.
    func statementThatMayFail<Result>(_ body: () throws -> Result) throws -> Result
}

/// Statements run by every connection of the process (transaction control included), so the
/// benchmark can report what one call costs in statements.
public enum StatementCounter {
    public static let run = Atomic<Int>(0)
}

extension Connection {
    @discardableResult
    public func query(_ sql: String, _ arguments: any SQLValueConvertible...) throws -> [Row] {
        try self.query(sql, arguments: arguments)
    }

    /// Runs one statement and returns its first row, if any.
    public func queryFirst(_ sql: String, _ arguments: any SQLValueConvertible...) throws -> Row? {
        try self.query(sql, arguments: arguments).first
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    ///
    /// `immediate` takes SQLite's write lock at BEGIN, so a writer never fails half-way with
    /// SQLITE_BUSY on upgrading a read to a write.
    public func transaction<Result>(immediate: Bool, _ body: () throws -> Result) throws -> Result {
        try self.transaction(begin: self.beginStatement(immediate: immediate), body)
    }

    /// Runs `body` in the transaction `begin` opens.
    public func transaction<Result>(begin: String, _ body: () throws -> Result) throws -> Result {
        try self.control(begin)
        do {
            let result = try body()
            try self.control("COMMIT")
            return result
        } catch {
            if self.isInTransaction { try? self.control("ROLLBACK") }
            throw error
        }
    }

    /// Runs `body` inside a savepoint of the caller's transaction: when it throws, only its own work
    /// is rolled back, and the error is rethrown for the caller to handle.
    public func savepoint<Result>(_ name: String, _ body: () throws -> Result) throws -> Result {
        precondition(self.isInTransaction, "a savepoint lives inside a transaction")
        try self.control("SAVEPOINT \(name)")
        do {
            let result = try body()
            try self.control("RELEASE \(name)")
            return result
        } catch {
            // SQLite may have rolled the whole transaction back already (a full disk, an I/O error).
            if self.isInTransaction {
                do {
                    try self.control("ROLLBACK TO \(name)")
                    try self.control("RELEASE \(name)")
                } catch _ {
                    // Its work must not be committed with the rest of the transaction: end it.
                    try? self.control("ROLLBACK")
                }
            }
            throw error
        }
    }
}
