/// Brings a database to the newest schema this binary knows.
///
/// All pending migrations run in one transaction (SQLite's `BEGIN IMMEDIATE`) together
/// with their rows in `schema_migrations`, so a crash leaves either the old
/// schema or the new one. A database that records a version this binary does
/// not know was written by a newer paymentsd and is refused, untouched.
public struct Migrator: Sendable {
    public let migrations: [Migration]

    public init(migrations: [Migration] = Schema.migrations) {
        precondition(
            zip(migrations, 1...).allSatisfy { $0.version == $1 }, "migrations are numbered 1, 2, 3, ... without gaps")
        self.migrations = migrations
    }

    public var latestVersion: Int { self.migrations.last?.version ?? 0 }

    /// Applies what is missing and returns the versions applied now.
    @discardableResult
    public func migrate(_ connection: any Connection, now: Int64) throws -> [Int] {
        // READ COMMITTED on PostgreSQL: a daemon that waited for another's migration must see it.
        let begin =
            switch connection.dialect {
            case .sqlite: "BEGIN IMMEDIATE"
            case .postgresql: "BEGIN ISOLATION LEVEL READ COMMITTED"
            }
        return try connection.transaction(begin: begin) {
            switch connection.dialect {
            case .sqlite:
                try connection.executeScript(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version INTEGER PRIMARY KEY,
                        name TEXT NOT NULL,
                        applied_at INTEGER NOT NULL
                    ) STRICT
                    """)
            case .postgresql:
                // Daemons of several hosts may start at once: one migrates, the others wait here and
                // then find nothing left to do. The lock ends with the transaction.
                try connection.executeScript(
                    """
                    SELECT pg_advisory_xact_lock(\(PostgresAdvisoryLocks.migrationKey));
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version BIGINT PRIMARY KEY,
                        name TEXT NOT NULL,
                        applied_at BIGINT NOT NULL
                    )
                    """)
            }
            let current = try connection.queryFirst("SELECT coalesce(max(version), 0) FROM schema_migrations")!.int(0)
            guard current <= self.latestVersion else {
                throw StoreError.databaseNewerThanBinary(databaseVersion: current, supportedVersion: self.latestVersion)
            }
            let pending = self.migrations.filter { $0.version > current }
            for migration in pending {
                try connection.executeScript(migration.sql)
                try connection.query(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    migration.version, migration.name, now)
            }
            return pending.map(\.version)
        }
    }
}
