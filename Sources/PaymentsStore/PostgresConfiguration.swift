/// Where the PostgreSQL store connects, and how patiently. It prints itself without its
/// password (neither the credential's nor one in the URI), so a configuration that reaches a log
/// line or an error message leaks none.
public struct PostgresConfiguration: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// A libpq connection URI (`postgresql://...`, `?host=/run/postgresql` for a Unix socket).
    public var uri: String
    /// The password, from a systemd credential; nil leaves it to the URI, PGPASSWORD or ~/.pgpass.
    public var password: String?
    /// Connections for reads and writes; the advisory locks use one more.
    public var poolSize: Int
    /// How long opening a connection may take, in seconds (libpq's connect_timeout).
    public var connectTimeoutSeconds: Int
    /// How long a write waits for a free connection, a row lock or a statement (statement_timeout,
    /// lock_timeout), in milliseconds: the role SQLite's busy timeout plays.
    public var busyTimeoutMS: Int

    public init(uri: String, password: String? = nil, poolSize: Int = 8, connectTimeoutSeconds: Int = 5, busyTimeoutMS: Int = 5000) {
        self.uri = uri
        self.password = password
        self.poolSize = poolSize
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.busyTimeoutMS = busyTimeoutMS
    }

    public var description: String {
        "PostgreSQL \(self.redactedURI) (pool \(self.poolSize), password \(self.password == nil ? "none" : "<redacted>"))"
    }

    public var debugDescription: String { self.description }

    /// Whether a `PAYMENTSD_DB` value names PostgreSQL rather than an SQLite file.
    public static func isURI(_ value: String) -> Bool {
        value.hasPrefix("postgresql://") || value.hasPrefix("postgres://")
    }

    /// The URI with any password in it replaced, for logs and error messages: the one of its
    /// authority (`user:secret@host`) and a `password=` parameter.
    public var redactedURI: String {
        var characters = Array(self.uri)
        if let scheme = Self.find(Array("://"), in: characters, from: 0) {
            let start = scheme + 3
            let end = characters[start...].firstIndex(where: { $0 == "/" || $0 == "?" }) ?? characters.endIndex
            if let at = characters[start..<end].lastIndex(of: "@"),
                let colon = characters[start..<at].firstIndex(of: ":")
            {
                characters.replaceSubrange((colon + 1)..<at, with: Array("<redacted>"))
            }
        }
        if let parameter = Self.find(Array("password="), in: characters, from: 0) {
            let start = parameter + "password=".count
            let end = characters[start...].firstIndex(of: "&") ?? characters.endIndex
            characters.replaceSubrange(start..<end, with: Array("<redacted>"))
        }
        return String(characters)
    }

    private static func find(_ needle: [Character], in haystack: [Character], from: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        return (from...(haystack.count - needle.count)).first { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }

    /// libpq's keywords and values: the defaults first, so the URI can override them, and the
    /// credential's password last, so it overrides the URI's.
    var connectionParameters: [(keyword: String, value: String)] {
        var parameters: [(keyword: String, value: String)] = [
            ("connect_timeout", String(self.connectTimeoutSeconds)),
            ("application_name", "paymentsd"),
            // A host that vanished without closing its connections is noticed in seconds, not hours.
            ("keepalives_idle", "10"), ("keepalives_interval", "3"), ("keepalives_count", "3"),
            ("dbname", self.uri),
        ]
        if let password = self.password { parameters.append(("password", password)) }
        return parameters
    }
}
