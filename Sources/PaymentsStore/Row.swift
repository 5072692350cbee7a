/// One result row, copied out of SQLite.
public struct Row: Sendable, Hashable {
    public let values: [SQLValue]

    public init(_ values: [SQLValue]) { self.values = values }

    public subscript(index: Int) -> SQLValue { self.values[index] }

    /// The integer at `index`; traps on another type, which means the query and its reader disagree.
    public func int64(_ index: Int) -> Int64 {
        guard case .integer(let value) = self.values[index] else {
            preconditionFailure("column \(index) is \(self.values[index]), not an integer")
        }
        return value
    }

    public func int(_ index: Int) -> Int { Int(self.int64(index)) }

    public func optionalInt64(_ index: Int) -> Int64? {
        if case .null = self.values[index] { return nil }
        return self.int64(index)
    }

    public func string(_ index: Int) -> String {
        guard case .text(let value) = self.values[index] else {
            preconditionFailure("column \(index) is \(self.values[index]), not text")
        }
        return value
    }

    public func optionalString(_ index: Int) -> String? {
        if case .null = self.values[index] { return nil }
        return self.string(index)
    }
}
