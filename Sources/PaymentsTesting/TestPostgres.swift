import PaymentsStore
import Synchronization

/// A fresh PostgreSQL database per test, on the throwaway server `make test` starts and names in
/// `PAYMENTSD_TEST_POSTGRES_URI` (a URI of its `postgres` database). Tests that need one are
/// enabled only when the variable is set; `make test` always sets it.
public enum TestPostgres {
    public static let serverURI: String? = {
        guard let value = getenv("PAYMENTSD_TEST_POSTGRES_URI") else { return nil }
        let text = String(cString: value)
        return text.isEmpty ? nil : text
    }()

    public static var isAvailable: Bool { Self.serverURI != nil }

    private static let counter = Atomic<Int>(0)

    /// Creates an empty database and returns the store's configuration for it.
    public static func freshDatabase(poolSize: Int = 4, busyTimeoutMS: Int = 5000) throws -> PostgresConfiguration {
        guard let server = Self.serverURI else { preconditionFailure("PAYMENTSD_TEST_POSTGRES_URI is not set") }
        let name = "swift_\(getpid())_\(Self.counter.add(1, ordering: .relaxed).newValue)"
        let admin = try PostgresConnection(parameters: [("dbname", server)])
        // One statement each: a multi-statement string is one implicit transaction, which these refuse.
        try admin.executeScript("DROP DATABASE IF EXISTS \(name)")
        try admin.executeScript("CREATE DATABASE \(name)")
        return PostgresConfiguration(uri: Self.uri(server, database: name), poolSize: poolSize, busyTimeoutMS: busyTimeoutMS)
    }

    /// `server` with its database (the last path segment before the query) replaced.
    static func uri(_ server: String, database: String) -> String {
        let parts = server.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var base = String(parts[0])
        if let slash = base.lastIndex(of: "/") { base = String(base[...slash]) }
        return base + database + (parts.count > 1 ? "?" + parts[1] : "")
    }
}

#if canImport(Glibc)
import Glibc
#endif
