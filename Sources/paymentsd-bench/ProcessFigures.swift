import Foundation

/// Figures of this process from /proc: its resident memory and its threads.
enum ProcessFigures {
    /// Resident set size in bytes (`VmRSS`).
    static var residentBytes: Int { (Self.status("VmRSS:") ?? 0) * 1024 }

    /// Threads of this process now (`Threads`).
    static var threads: Int { Self.status("Threads:") ?? 0 }

    /// The number after `field` in /proc/self/status.
    private static func status(_ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field) {
            return Int(line.dropFirst(field.count).split(whereSeparator: \.isWhitespace).first ?? "")
        }
        return nil
    }
}
