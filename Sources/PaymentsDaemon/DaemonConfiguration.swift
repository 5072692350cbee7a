import Logging
import PaymentsHTTP
import PaymentsStore

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's settings (protocol.md section 7), read once at start-up.
///
/// Every variable has a default that works for a local run except the Stripe
/// secrets, which a payments daemon cannot do without. A bad value is a
/// `ConfigurationError` naming the variable and never echoing a secret.
public struct DaemonConfiguration: Sendable {
    public var socketPath: String
    /// PAYMENTSD_DB as given: an SQLite file's path, or a PostgreSQL URI (then `postgres` is set).
    public var databasePath: String
    public var maxFrame: Int
    /// How long a write waits for another process's lock on the database (before the call's deadline).
    public var busyTimeoutMS: Int
    public var maxConnections: Int
    /// How long a started frame may take to arrive, and how long a connection may sit idle.
    public var frameTimeout: Duration
    public var idleTimeout: Duration
    /// Bytes of requests read and not yet answered: for the whole daemon, and for one connection.
    public var memoryBudget: Int
    public var connectionBudget: Int
    public var allowedGroups: Set<UInt32>
    public var adminGroups: Set<UInt32>
    public var checkoutTTL: Int
    public var janitorInterval: Int
    /// Seconds of Stripe events the first catch-up fetches, and the age at which an open checkout
    /// no event settled is asked about at Stripe.
    public var eventsLookback: Int
    public var askStripeAfter: Int
    public var logLevel: Logger.Level
    public var stripeAPIBase: String
    public var stripeSecretKey: Secret
    public var stripeWebhookSecrets: [Secret]
    /// Tests only: the crash point at which the process ends at once.
    public var crashAt: String?
    /// Tests only: a wait before every call's handler (PAYMENTSD_TEST_DELAY_MS).
    public var testDelayMS: Int?
    /// Tests and the bench: the CA file Stripe's certificate must chain to instead of the
    /// system's (STRIPE_CA_FILE), for a local TLS terminator in front of the fake.
    public var stripeCAFile: String? = nil
    /// Where the optional HTTP endpoint listens (PAYMENTSD_HTTP_LISTEN); nil: off, unless systemd
    /// passes its socket.
    public var httpListen: HTTPListener? = nil
    /// The PostgreSQL store's settings, when PAYMENTSD_DB is a `postgresql://` URI.
    public var postgres: PostgresConfiguration? = nil

    public static let defaultSocketPath = "/run/paymentsd/paymentsd.sock"
    public static let maxSocketPathBytes = 107
    public static let defaultStripeAPIBase = "https://api.stripe.com"

    /// Reads the configuration.
    ///
    /// - Parameters:
    ///   - environment: the process environment.
    ///   - readFile: reads a credential file; nil when it does not exist.
    ///   - resolveGroup: a group name's gid; nil when there is no such group.
    public static func load(
        environment: [String: String],
        readFile: (String) -> String? = DaemonConfiguration.readFile,
        resolveGroup: (String) -> UInt32? = DaemonConfiguration.groupID
    ) throws -> DaemonConfiguration {
        let env = Environment(values: environment)
        let socketPath = env["PAYMENTSD_SOCKET"] ?? Self.defaultSocketPath
        // sun_path holds 108 bytes on Linux, the terminating NUL included.
        guard !socketPath.isEmpty, socketPath.utf8.count <= Self.maxSocketPathBytes else {
            throw ConfigurationError(
                "PAYMENTSD_SOCKET", "must be a path of 1 to \(Self.maxSocketPathBytes) bytes (\(socketPath.prefix(200)))")
        }
        let stateDirectory = env["STATE_DIRECTORY"]?.split(separator: ":").first.map(String.init)
        let databasePath = env["PAYMENTSD_DB"] ?? "\(stateDirectory ?? "/var/lib/paymentsd")/payments.db"
        guard !databasePath.isEmpty else { throw ConfigurationError("PAYMENTSD_DB", "must not be empty") }

        let credentials = env["CREDENTIALS_DIRECTORY"]
        let secretKey = try Self.secret(
            "STRIPE_SECRET_KEY", file: "stripe-secret-key", env: env, credentials: credentials, readFile: readFile)
        guard let secretKey, !secretKey.isEmpty else {
            throw ConfigurationError(
                "STRIPE_SECRET_KEY", "is required (or $CREDENTIALS_DIRECTORY/stripe-secret-key)")
        }
        guard secretKey.hasPrefix("sk_") || secretKey.hasPrefix("rk_"), Self.isToken(secretKey) else {
            throw ConfigurationError(
                "STRIPE_SECRET_KEY", "is not a Stripe secret or restricted key (sk_... or rk_...)")
        }
        let webhookList = try Self.secret(
            "STRIPE_WEBHOOK_SECRETS", file: "stripe-webhook-secrets", env: env, credentials: credentials,
            readFile: readFile)
        let webhookSecrets = (webhookList ?? "").split(whereSeparator: { $0 == "," || $0.isNewline })
            .map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        guard !webhookSecrets.isEmpty else {
            throw ConfigurationError(
                "STRIPE_WEBHOOK_SECRETS", "is required (or $CREDENTIALS_DIRECTORY/stripe-webhook-secrets)")
        }
        guard webhookSecrets.allSatisfy({ $0.hasPrefix("whsec_") && Self.isToken($0) }) else {
            throw ConfigurationError("STRIPE_WEBHOOK_SECRETS", "every entry must be a webhook secret (whsec_...)")
        }

        var apiBase = env["STRIPE_API_BASE"] ?? Self.defaultStripeAPIBase
        while apiBase.hasSuffix("/") { apiBase.removeLast() }
        guard apiBase.hasPrefix("https://") || apiBase.hasPrefix("http://"), apiBase.count > 8,
            Self.isToken(apiBase)
        else {
            throw ConfigurationError("STRIPE_API_BASE", "must be an http:// or https:// URL")
        }

        let logLevel: Logger.Level
        switch env["PAYMENTSD_LOG_LEVEL"] ?? "info" {
        case "debug": logLevel = .debug
        case "info": logLevel = .info
        case "notice": logLevel = .notice
        case "warning": logLevel = .warning
        case "error": logLevel = .error
        default: throw ConfigurationError("PAYMENTSD_LOG_LEVEL", "must be debug, info, notice, warning or error")
        }

        var stripeCAFile: String? = nil
        if let path = env["STRIPE_CA_FILE"], !path.isEmpty {
            guard let pem = readFile(path), pem.contains("-----BEGIN CERTIFICATE-----") else {
                throw ConfigurationError("STRIPE_CA_FILE", "must be a readable PEM file of certificates")
            }
            stripeCAFile = path
        }

        var httpListen: HTTPListener? = nil
        if let text = env["PAYMENTSD_HTTP_LISTEN"], !text.isEmpty {
            guard let listener = HTTPListener.parse(text) else {
                throw ConfigurationError(
                    "PAYMENTSD_HTTP_LISTEN", "must be 127.0.0.1:PORT or [::1]:PORT (loopback only), or unix:/path")
            }
            httpListen = listener
        }

        var testDelayMS: Int? = nil
        if env["PAYMENTSD_TEST_DELAY_MS"] != nil {
            testDelayMS = try env.integer("PAYMENTSD_TEST_DELAY_MS", default: 0, in: 0...600_000)
        }
        return DaemonConfiguration(
            socketPath: socketPath,
            databasePath: databasePath,
            maxFrame: try env.integer("PAYMENTSD_MAX_FRAME", default: 1 << 20, in: 1...(64 << 20)),
            busyTimeoutMS: try env.integer("PAYMENTSD_BUSY_TIMEOUT_MS", default: 5000, in: 0...600_000),
            maxConnections: try env.integer("PAYMENTSD_MAX_CONNECTIONS", default: 512, in: 1...1_000_000),
            frameTimeout: try env.seconds("PAYMENTSD_FRAME_TIMEOUT", default: 10, in: 0.01...3600),
            idleTimeout: try env.seconds("PAYMENTSD_IDLE_TIMEOUT", default: 300, in: 0.01...86400),
            memoryBudget: try env.integer("PAYMENTSD_MEMORY_BUDGET", default: 32 << 20, in: (64 << 10)...(64 << 30)),
            connectionBudget: try env.integer(
                "PAYMENTSD_CONNECTION_BUDGET", default: 4 << 20, in: (64 << 10)...(64 << 30)),
            allowedGroups: try Self.groups("PAYMENTSD_ALLOW_GIDS", env: env, resolve: resolveGroup),
            adminGroups: try Self.groups("PAYMENTSD_ADMIN_GIDS", env: env, resolve: resolveGroup),
            checkoutTTL: try env.integer("PAYMENTSD_CHECKOUT_TTL", default: 1800, in: 1800...86400),
            janitorInterval: try env.integer("PAYMENTSD_JANITOR_INTERVAL", default: 30, in: 1...86400),
            eventsLookback: try env.integer("PAYMENTSD_EVENTS_LOOKBACK", default: 3 * 86400, in: 60...(30 * 86400)),
            askStripeAfter: try env.integer("PAYMENTSD_ASK_STRIPE_AFTER", default: 900, in: 1...86400),
            logLevel: logLevel,
            stripeAPIBase: apiBase,
            stripeSecretKey: Secret(secretKey),
            stripeWebhookSecrets: webhookSecrets.map { Secret(String($0)) },
            crashAt: env["PAYMENTSD_CRASH_AT"].flatMap { $0.isEmpty ? nil : $0 },
            testDelayMS: testDelayMS,
            stripeCAFile: stripeCAFile,
            httpListen: httpListen,
            postgres: try Self.postgres(databasePath, env: env, credentials: credentials, readFile: readFile))
    }

    /// The PostgreSQL store's settings when PAYMENTSD_DB is a connection URI, else nil (SQLite).
    private static func postgres(
        _ database: String, env: Environment, credentials: String?, readFile: (String) -> String?
    ) throws -> PostgresConfiguration? {
        guard PostgresConfiguration.isURI(database) else { return nil }
        // Only from the credential: a password in the environment would show in /proc/PID/environ.
        let password = credentials.flatMap { readFile("\($0)/postgres-password") }.map {
            String($0.trimmingWhitespace())
        }
        return PostgresConfiguration(
            uri: database, password: password,
            poolSize: try env.integer("PAYMENTSD_DB_POOL_SIZE", default: 8, in: 1...256),
            connectTimeoutSeconds: try env.integer("PAYMENTSD_DB_CONNECT_TIMEOUT", default: 5, in: 1...600),
            busyTimeoutMS: try env.integer("PAYMENTSD_BUSY_TIMEOUT_MS", default: 5000, in: 0...600_000))
    }

    /// A credential from systemd's credential directory if present there, else from the environment.
    private static func secret(
        _ variable: String, file: String, env: Environment, credentials: String?, readFile: (String) -> String?
    ) throws -> String? {
        if let credentials, let contents = readFile("\(credentials)/\(file)") {
            return String(contents.trimmingWhitespace())
        }
        return env[variable].map { String($0.trimmingWhitespace()) }
    }

    private static func groups(
        _ variable: String, env: Environment, resolve: (String) -> UInt32?
    ) throws -> Set<UInt32> {
        guard let list = env[variable] else { return [] }
        var groups: Set<UInt32> = []
        for entry in list.split(separator: ",").map({ $0.trimmingWhitespace() }) where !entry.isEmpty {
            if let gid = UInt32(entry) {
                groups.insert(gid)
            } else if let gid = resolve(String(entry)) {
                groups.insert(gid)
            } else {
                throw ConfigurationError(variable, "no group named \"\(entry.prefix(64))\"")
            }
        }
        return groups
    }

    /// Printable ASCII without spaces: what keys, secrets and URLs consist of.
    private static func isToken(_ value: some StringProtocol) -> Bool {
        value.utf8.allSatisfy { (0x21...0x7E).contains($0) }
    }

    /// The contents of a file, or nil when it cannot be read.
    public static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: buffer.prefix(count))
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The gid of the group named `name`, from the group database.
    public static func groupID(_ name: String) -> UInt32? {
        var entry = group()
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        var result: UnsafeMutablePointer<group>?
        guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.gr_gid
    }
}

/// The environment, with empty values treated as unset.
private struct Environment {
    let values: [String: String]

    subscript(_ name: String) -> String? {
        guard let value = self.values[name], !value.isEmpty else { return nil }
        return value
    }

    func integer(_ name: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let text = self[name] else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw ConfigurationError(name, "must be an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// Seconds, decimals allowed ("0.5").
    func seconds(_ name: String, default value: Double, in range: ClosedRange<Double>) throws -> Duration {
        guard let text = self[name] else { return .milliseconds(Int64(value * 1000)) }
        guard let number = Double(text), number.isFinite, range.contains(number) else {
            throw ConfigurationError(name, "must be a number of seconds from \(range.lowerBound) to \(range.upperBound)")
        }
        return .milliseconds(Int64((number * 1000).rounded()))
    }
}

extension StringProtocol {
    fileprivate func trimmingWhitespace() -> Substring {
        let start = self.firstIndex(where: { !$0.isWhitespace }) ?? self.endIndex
        let end = self.lastIndex(where: { !$0.isWhitespace }).map { self.index(after: $0) } ?? start
        return Substring(self[start..<Swift.max(start, end)])
    }
}
