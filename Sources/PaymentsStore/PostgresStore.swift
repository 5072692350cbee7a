import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's state in PostgreSQL, shared by the paymentsd of several hosts.
///
/// Every write is one SERIALIZABLE transaction on a connection of the pool: PostgreSQL then gives
/// what SQLite's single writer gives, each write as if it ran alone, by failing one of two
/// transactions that crossed; that one is run again from the start (its body reads again), up to
/// `maxAttempts` times. Reads are REPEATABLE READ READ ONLY: one snapshot, like SQLite's.
///
/// There is no group commit: PostgreSQL commits transactions of different connections in parallel
/// and shares their WAL flushes itself.
final class PostgresStore: Sendable {
    static let maxAttempts = 20

    let configuration: PostgresConfiguration
    let locks: PostgresAdvisoryLocks
    private let pool: PostgresPool
    private let condition: StorageCondition
    private let counters = WriteBatch.Counters()
    /// When the server was last asked whether it answers (ms of the continuous clock).
    private let lastProbe = Atomic<Int64>(-1_000_000)

    /// Connects, migrates the database, and keeps the connection for the pool.
    ///
    /// - Throws: `StoreError.databaseNewerThanBinary` for a database a newer paymentsd migrated,
    ///   `PostgresError` when the server cannot be reached or refuses the schema.
    init(
        configuration: PostgresConfiguration, migrator: Migrator = Migrator(migrations: PostgresSchema.migrations),
        onConditionChange: @escaping @Sendable (StorageTrouble?) -> Void
    ) throws {
        self.configuration = configuration
        let condition = StorageCondition(onChange: onConditionChange)
        self.condition = condition
        let connect: @Sendable () throws -> PostgresConnection = {
            let connection = try PostgresConnection(parameters: configuration.connectionParameters)
            let timeout = max(configuration.busyTimeoutMS, 1)
            // A transaction left open by a hung caller would hold its row locks for every host; notices
            // ("already exists, skipping") are not worth sending.
            try connection.executeScript(
                """
                SET statement_timeout = \(timeout); SET lock_timeout = \(timeout);
                SET idle_in_transaction_session_timeout = 60000; SET client_min_messages = warning;
                """)
            return connection
        }
        let first = try connect()
        try migrator.migrate(first, now: Int64(time(nil)))
        self.pool = PostgresPool(size: configuration.poolSize, connect: connect)
        self.pool.seed(first)
        self.locks = PostgresAdvisoryLocks(connect: connect, classify: { condition.classify($0) })
    }

    var committedTransactions: Int { self.counters.transactions.load(ordering: .relaxed) }
    var committedWrites: Int { self.counters.writes.load(ordering: .relaxed) }

    func write<Result: Sendable>(_ body: @escaping @Sendable (any Connection) throws -> Result) async throws -> Result {
        // As on SQLite: a write asked for in time waits for a connection until the call's deadline;
        // the bookkeeping after a deadline spent on Stripe waits the store's own timeout.
        let patience = ContinuousClock.now + .milliseconds(self.configuration.busyTimeoutMS)
        let deadline: ContinuousClock.Instant =
            switch Store.callDeadline {
            case .some(let callDeadline) where ContinuousClock.now < callDeadline: min(callDeadline, patience)
            case .some, .none: patience
            }
        let leases = PostgresAdvisoryLocks.held
        var attempt = 1
        while true {
            do {
                let result = try await self.pool.run(until: deadline) { connection in
                    try connection.transaction(begin: "BEGIN ISOLATION LEVEL SERIALIZABLE") {
                        try PostgresAdvisoryLocks.verify(leases, on: connection)
                        return try body(connection)
                    }
                }
                self.condition.recordSuccess()
                self.counters.transactions.add(1, ordering: .relaxed)
                self.counters.writes.add(1, ordering: .relaxed)
                return result
            } catch let error as PostgresError where error.isRetryable && attempt < Self.maxAttempts {
                attempt += 1
                // Two hosts crossed on the same rows: let the other finish before trying again.
                try await Task.sleep(for: .microseconds(Int.random(in: 100...(1000 * attempt))))
            } catch {
                throw self.classified(error)
            }
        }
    }

    func read<Result: Sendable>(_ body: @escaping @Sendable (any Connection) throws -> Result) async throws -> Result {
        let deadline = ContinuousClock.now + .milliseconds(self.configuration.busyTimeoutMS)
        do {
            return try await self.pool.run(until: deadline) { connection in
                try connection.transaction(begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
                    try body(connection)
                }
            }
        } catch {
            throw self.classified(error, recording: false)
        }
    }

    /// Why the database cannot take writes now, or nil. Asks the server at most once a second, so
    /// a server that went away under an idle daemon is noticed (Health, the watchdog), and one that
    /// came back is noticed without a write.
    func trouble() async -> StorageTrouble? {
        let now = Self.millisecondsNow()
        if now - self.lastProbe.load(ordering: .relaxed) >= 1000 || self.condition.current != nil {
            self.lastProbe.store(now, ordering: .relaxed)
            do {
                try await self.pool.run(until: ContinuousClock.now + .seconds(1)) { connection in
                    _ = try connection.query("SELECT 1", arguments: [])
                }
                self.condition.recordSuccess()
            } catch {
                _ = self.classified(error)
            }
        }
        return self.condition.current
    }

    private func classified(_ error: any Error, recording: Bool = true) -> any Error {
        let classified = self.condition.classify(error, recording: recording)
        // Every idle connection is as dead as the one that just lost its server: drop them all at once.
        if (error as? PostgresError)?.isUnreachable == true { self.pool.closeIdle() }
        return classified
    }

    private static let clockOrigin = ContinuousClock.now

    private static func millisecondsNow() -> Int64 { Int64((ContinuousClock.now - Self.clockOrigin) / .milliseconds(1)) }
}
