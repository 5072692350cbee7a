import Foundation
import Testing

/// The store owns every statement: SQL text anywhere else in `Sources/` is a query that escaped
/// its typed API (and one the PostgreSQL store would not get).
@Suite struct QueryOwnershipTests {
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// A statement's keyword at the start of a string literal's text or of a line, as SQL is written.
    static let statement = try! NSRegularExpression(
        pattern: #"(^|")\s*(SELECT|INSERT\s+INTO|UPDATE\s+[a-z_]+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|TRIGGER)|SAVEPOINT|BEGIN|COMMIT|ROLLBACK)\b"#,
        options: [.anchorsMatchLines])

    @Test func noSQLTextOutsideThePaymentsStoreModule() throws {
        let files = try #require(FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil))
        var offenders: [String] = []
        var scanned = 0
        for case let url as URL in files where url.pathExtension == "swift" {
            let relative = url.path.replacingOccurrences(of: Self.sources.path + "/", with: "")
            guard !relative.hasPrefix("PaymentsStore/") else { continue }
            scanned += 1
            let text = try String(contentsOf: url, encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = String(line)
                if line.trimmingCharacters(in: .whitespaces).hasPrefix("//") { continue }
                let range = NSRange(line.startIndex..., in: line)
                if Self.statement.firstMatch(in: line, range: range) != nil {
                    offenders.append("\(relative):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        #expect(scanned > 50, "the scan found the sources at \(Self.sources.path)")
        #expect(offenders.isEmpty, "SQL outside PaymentsStore:\n\(offenders.joined(separator: "\n"))")
    }

    @Test func thePatternFindsSQLWhereItIs() throws {
        for sql in [#"try db.query("SELECT 1 FROM x")"#, "    INSERT INTO payments (a) VALUES (?)",
                    #""UPDATE payments SET a = 1""#, #"  "DELETE FROM refunds""#] {
            #expect(Self.statement.firstMatch(in: sql, range: NSRange(sql.startIndex..., in: sql)) != nil, "\(sql)")
        }
        let prose = "/// Selects the payment; updates nothing."
        #expect(Self.statement.firstMatch(in: prose, range: NSRange(prose.startIndex..., in: prose)) == nil)
    }
}
