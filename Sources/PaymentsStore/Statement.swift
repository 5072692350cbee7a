import CSQLite

/// A prepared statement, finalized when released.
public final class Statement {
    let handle: OpaquePointer
    public let sql: String
    private unowned let connection: SQLiteConnection

    init(connection: SQLiteConnection, sql: String) throws {
        var handle: OpaquePointer?
        let code = sqlite3_prepare_v2(connection.handle, sql, -1, &handle, nil)
        guard code == SQLITE_OK, let handle else {
            sqlite3_finalize(handle)
            throw connection.error(code, sql: sql)
        }
        self.handle = handle
        self.sql = sql
        self.connection = connection
    }

    deinit { sqlite3_finalize(self.handle) }

    /// Binds `values` to the parameters 1...n, replacing earlier bindings.
    public func bind(_ values: [any SQLValueConvertible]) throws {
        sqlite3_reset(self.handle)
        sqlite3_clear_bindings(self.handle)
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value.sqlValue {
            case .null: code = sqlite3_bind_null(self.handle, index)
            case .integer(let int): code = sqlite3_bind_int64(self.handle, index, int)
            case .text(let text): code = paymentsd_sqlite3_bind_text(self.handle, index, text, -1)
            case .blob(let bytes):
                code = bytes.withUnsafeBytes {
                    paymentsd_sqlite3_bind_blob(self.handle, index, $0.baseAddress, Int32($0.count))
                }
            }
            guard code == SQLITE_OK else { throw self.connection.error(code, sql: self.sql) }
        }
    }

    /// Runs the statement to completion and returns every row.
    public func rows() throws -> [Row] {
        defer { sqlite3_reset(self.handle) }
        var rows: [Row] = []
        while true {
            let code = sqlite3_step(self.handle)
            switch code {
            case SQLITE_ROW: rows.append(self.currentRow())
            case SQLITE_DONE: return rows
            default: throw self.connection.error(code, sql: self.sql)
            }
        }
    }

    private func currentRow() -> Row {
        let count = sqlite3_column_count(self.handle)
        return Row(
            (0..<count).map { column in
                switch sqlite3_column_type(self.handle, column) {
                case SQLITE_NULL: return .null
                case SQLITE_INTEGER: return .integer(sqlite3_column_int64(self.handle, column))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(self.handle, column))
                    guard count > 0, let base = sqlite3_column_blob(self.handle, column) else { return .blob([]) }
                    return .blob(Array(UnsafeRawBufferPointer(start: base, count: count)))
                default:
                    // TEXT (and FLOAT, which this schema never stores) read as text.
                    guard let text = sqlite3_column_text(self.handle, column) else { return .text("") }
                    return .text(String(cString: text))
                }
            })
    }
}

@available(*, unavailable)
extension Statement: Sendable {}
