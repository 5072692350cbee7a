import CSQLite

/// An SQLite result code, extended codes kept (`SQLITE_CONSTRAINT_UNIQUE`,
/// not only `SQLITE_CONSTRAINT`).
///
/// Match a family with the primary code: `case .constraint` matches every
/// `SQLITE_CONSTRAINT_*` because `~=` compares primary codes when the
/// pattern is one.
public struct ResultCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The primary code of an extended one (its low byte).
    public var primary: ResultCode { ResultCode(rawValue: self.rawValue & 0xFF) }

    public var isPrimary: Bool { self == self.primary }

    public static let ok = ResultCode(rawValue: SQLITE_OK)
    public static let row = ResultCode(rawValue: SQLITE_ROW)
    public static let done = ResultCode(rawValue: SQLITE_DONE)
    public static let busy = ResultCode(rawValue: SQLITE_BUSY)
    public static let locked = ResultCode(rawValue: SQLITE_LOCKED)
    public static let constraint = ResultCode(rawValue: SQLITE_CONSTRAINT)
    public static let constraintUnique = ResultCode(rawValue: Int32(PAYMENTSD_SQLITE_CONSTRAINT_UNIQUE))
    public static let constraintPrimaryKey = ResultCode(rawValue: Int32(PAYMENTSD_SQLITE_CONSTRAINT_PRIMARYKEY))
    public static let constraintForeignKey = ResultCode(rawValue: Int32(PAYMENTSD_SQLITE_CONSTRAINT_FOREIGNKEY))
    public static let constraintCheck = ResultCode(rawValue: Int32(PAYMENTSD_SQLITE_CONSTRAINT_CHECK))
    /// A trigger's `RAISE(ABORT, ...)`: the refund cap, the append-only audit trail.
    public static let constraintTrigger = ResultCode(rawValue: Int32(PAYMENTSD_SQLITE_CONSTRAINT_TRIGGER))
    public static let misuse = ResultCode(rawValue: SQLITE_MISUSE)
    /// The file is not an SQLite database.
    public static let notADatabase = ResultCode(rawValue: SQLITE_NOTADB)
    public static let range = ResultCode(rawValue: SQLITE_RANGE)
    public static let full = ResultCode(rawValue: SQLITE_FULL)
    public static let readOnly = ResultCode(rawValue: SQLITE_READONLY)
    public static let ioError = ResultCode(rawValue: SQLITE_IOERR)
    public static let cantOpen = ResultCode(rawValue: SQLITE_CANTOPEN)
    public static let corrupt = ResultCode(rawValue: SQLITE_CORRUPT)
    public static let protocolError = ResultCode(rawValue: SQLITE_PROTOCOL)
    public static let noLargeFileSupport = ResultCode(rawValue: SQLITE_NOLFS)

    public static func ~= (pattern: ResultCode, code: ResultCode) -> Bool {
        pattern.isPrimary ? pattern == code.primary : pattern == code
    }

    public var description: String {
        "\(String(cString: sqlite3_errstr(self.rawValue))) (\(self.rawValue))"
    }
}
