/// An error SQLite reported.
///
/// Holds SQLite's message and the statement's SQL, never the bound values:
/// those may be amounts, references or keys that do not belong in a log.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    public let code: ResultCode
    public let message: String
    public let sql: String?

    public init(code: ResultCode, message: String, sql: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
    }

    public var description: String {
        var text = "SQLite error \(self.code): \(self.message)"
        if let sql { text += " in <\(sql)>" }
        return text
    }
}
