import CPostgres
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection to PostgreSQL, closed when released.
///
/// Statements are written with SQLite's `?` parameters, as every query of the store is; they are
/// numbered (`$1`, `$2`, ...) once, prepared once per connection and cached. Values go as text, a
/// blob as binary bytea; results come back as text and are read by their column's type.
///
/// Not Sendable: libpq connections are used from one thread at a time; `PostgresPool` lends each
/// to one caller.
public final class PostgresConnection: Connection {
    let handle: OpaquePointer
    private var prepared: [String: String] = [:]
    public private(set) var changes = 0

    /// Connects with libpq's keywords and values, in order: a later keyword overrides an earlier
    /// one, and `dbname` may be a whole connection URI, expanded where it stands.
    public init(parameters: [(keyword: String, value: String)]) throws {
        let keywords = parameters.map { strdup($0.keyword) } + [nil]
        let values = parameters.map { strdup($0.value) } + [nil]
        defer {
            for pointer in keywords { free(pointer) }
            for pointer in values { free(pointer) }
        }
        let handle = keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { keywordPointers in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { valuePointers in
                PQconnectdbParams(keywordPointers.baseAddress, valuePointers.baseAddress, 1)
            }
        }
        guard let handle else { throw PostgresError(sqlState: "", message: "out of memory", connectionLost: true) }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.trimmed(PQerrorMessage(handle))
            PQfinish(handle)
            throw PostgresError(sqlState: "", message: message, connectionLost: true)
        }
        // libpq prints notices, and the FATAL a server sends when it ends an idle session, to
        // stderr, past the daemon's logger; what matters of them comes back as a statement's error.
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
        self.handle = handle
    }

    deinit { PQfinish(self.handle) }

    public var dialect: SQLDialect { .postgresql }

    /// Whether libpq still has the connection; false once the server went away under it.
    var isConnected: Bool { PQstatus(self.handle) == CONNECTION_OK }

    /// Whether the server still has this idle connection: reads what arrived while it sat in the
    /// pool (without waiting), so a server that restarted or ended the session since is noticed here,
    /// before a statement is lost to it.
    var isAlive: Bool {
        PQconsumeInput(self.handle) == 1 && self.isConnected
    }

    public var isInTransaction: Bool {
        switch PQtransactionStatus(self.handle) {
        case PQTRANS_INTRANS, PQTRANS_INERROR, PQTRANS_ACTIVE: true
        case PQTRANS_IDLE, PQTRANS_UNKNOWN: false
        default: false  // libpq's C enum: Swift cannot know it is closed.
        }
    }

    /// SERIALIZABLE for writes: what SQLite's single writer gives for free, PostgreSQL gives for
    /// transactions of several hosts by failing one of two that crossed, which the store runs again.
    public func beginStatement(immediate: Bool) -> String {
        immediate ? "BEGIN ISOLATION LEVEL SERIALIZABLE" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    }

    public func statementThatMayFail<Result>(_ body: () throws -> Result) throws -> Result {
        try self.savepoint("may_fail", body)
    }

    public func executeScript(_ sql: String) throws {
        StatementCounter.run.add(1, ordering: .relaxed)
        let result = PQexec(self.handle, sql)
        defer { PQclear(result) }
        try self.check(result, sql: sql)
    }

    public func control(_ sql: String) throws {
        try self.executeScript(sql)
    }

    public func query(_ sql: String, arguments: [any SQLValueConvertible]) throws -> [Row] {
        StatementCounter.run.add(1, ordering: .relaxed)
        let values = arguments.map(\.sqlValue)
        let name = try self.statementName(sql, values)
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        defer { for buffer in buffers { free(buffer) } }
        for value in values {
            switch value {
            case .null:
                buffers.append(nil)
                lengths.append(0)
                formats.append(0)
            case .integer(let int):
                buffers.append(strdup(String(int)))
                lengths.append(0)
                formats.append(0)
            case .text(let text):
                buffers.append(strdup(text))
                lengths.append(0)
                formats.append(0)
            case .blob(let bytes):
                // malloc'ed like strdup's copies, so one free() releases every buffer.
                let buffer = malloc(max(bytes.count, 1))!.assumingMemoryBound(to: CChar.self)
                bytes.withUnsafeBytes { raw in
                    if let base = raw.baseAddress { memcpy(buffer, base, bytes.count) }
                }
                buffers.append(buffer)
                lengths.append(Int32(bytes.count))
                formats.append(1)
            }
        }
        let result = buffers.map { UnsafePointer($0) }.withUnsafeBufferPointer { pointers in
            PQexecPrepared(self.handle, name, Int32(values.count), pointers.baseAddress, lengths, formats, 0)
        }
        defer { PQclear(result) }
        try self.check(result, sql: sql)
        self.changes = Int(String(cString: PQcmdTuples(result))) ?? 0
        return Self.rows(result!)
    }

    /// The prepared statement for `sql`, prepared now if this connection has not seen it. The
    /// parameters' types are the first call's (null leaves one for the server to infer).
    private func statementName(_ sql: String, _ values: [SQLValue]) throws -> String {
        if let name = self.prepared[sql] { return name }
        let name = "s\(self.prepared.count)"
        let types: [UInt32] = values.map { value in
            switch value {
            case .null: 0
            case .integer: 20  // int8
            case .text: 25  // text
            case .blob: 17  // bytea
            }
        }
        let result = PQprepare(self.handle, name, Self.numberedParameters(sql), Int32(types.count), types)
        defer { PQclear(result) }
        try self.check(result, sql: sql)
        self.prepared[sql] = name
        return name
    }

    /// `?` becomes `$1`, `$2`, ... outside quoted text.
    static func numberedParameters(_ sql: String) -> String {
        var output = ""
        var number = 0
        var quoted = false
        for character in sql {
            if character == "'" { quoted.toggle() }
            if character == "?" && !quoted {
                number += 1
                output += "$\(number)"
            } else {
                output.append(character)
            }
        }
        return output
    }

    private func check(_ result: OpaquePointer?, sql: String) throws {
        guard let result else {
            throw PostgresError(
                sqlState: "", message: Self.trimmed(PQerrorMessage(self.handle)), sql: sql,
                connectionLost: !self.isConnected)
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return
        default:
            let state = PQresultErrorField(result, Int32(PAYMENTSD_PG_DIAG_SQLSTATE)).map { String(cString: $0) } ?? ""
            let message =
                PQresultErrorField(result, Int32(PAYMENTSD_PG_DIAG_MESSAGE_PRIMARY)).map { String(cString: $0) }
                ?? Self.trimmed(PQerrorMessage(self.handle))
            throw PostgresError(sqlState: state, message: message, sql: sql, connectionLost: !self.isConnected)
        }
    }

    private static func rows(_ result: OpaquePointer) -> [Row] {
        let count = PQntuples(result)
        let fields = PQnfields(result)
        let types = (0..<fields).map { PQftype(result, $0) }
        return (0..<count).map { row in
            Row(
                (0..<fields).map { field in
                    guard PQgetisnull(result, row, field) == 0 else { return .null }
                    let text = String(cString: PQgetvalue(result, row, field))
                    switch types[Int(field)] {
                    case 16: return .integer(text == "t" ? 1 : 0)  // bool
                    case 20, 21, 23, 1700:  // int8, int2, int4, numeric (a sum of bigints)
                        guard let value = Int64(text) else { return .text(text) }
                        return .integer(value)
                    case 17: return .blob(Self.bytes(hex: text))  // bytea, hex output
                    default: return .text(text)
                    }
                })
        }
    }

    /// bytea's hex output form: `\x` and two hex digits per byte.
    static func bytes(hex text: String) -> [UInt8] {
        let digits = Array(text.utf8.dropFirst(2))
        func nibble(_ c: UInt8) -> UInt8 {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: 0
            }
        }
        return stride(from: 0, to: digits.count - 1, by: 2).map { nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
    }

    private static func trimmed(_ message: UnsafePointer<CChar>?) -> String {
        guard let message else { return "unknown libpq error" }
        var text = String(cString: message)
        while text.last?.isNewline == true || text.last == " " { text.removeLast() }
        return text
    }
}

@available(*, unavailable)
extension PostgresConnection: Sendable {}
