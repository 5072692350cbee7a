import CSystemShims
import Logging

/// Writes log lines to stderr with the sd-daemon level prefix (`<6>` for info),
/// which journald turns into the entry's priority.
///
/// Metadata is printed as `key=value`. Secrets never reach here as text:
/// configuration holds them in `Secret`, which prints as "<redacted>".
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = "<\(Self.priority(event.level))>\(event.message)"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(key)=\(value)"
        }
        // One line per entry: a newline inside a value would start a new journal entry without a prefix.
        line = line.replacingNewlines() + "\n"
        line.withCString { paymentsd_stderr_write($0, strlen($0)) }
    }

    /// syslog priorities, as sd-daemon(3) defines the prefixes.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(self.map { $0.isNewline ? " " : $0 })
    }
}

#if canImport(Glibc)
import Glibc
#endif
