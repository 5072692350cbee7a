import PaymentsDomain
import PaymentsTesting
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import PaymentsStore

/// The PostgreSQL store on a real server (`make test` starts one): the schema's guarantees, the
/// SERIALIZABLE retry, the advisory locks across two stores (two hosts), and an unreachable server.
@Suite(.enabled(if: TestPostgres.isAvailable, "needs PAYMENTSD_TEST_POSTGRES_URI (make test sets it)"))
struct PostgresStoreTests {
    private static func paidPayment(_ store: Store, id: String, total: Int64) async throws {
        try await store.write { db in
            try db.query(
                """
                INSERT INTO payments (payment_id, deal_id, customer_ref, mode, status, currency, amount_total,
                    success_url, cancel_url, fingerprint, expires_at, created_at, updated_at)
                VALUES (?, ?, 'cus', 'PAYMENT', 'PAID', 'usd', ?, 'https://s', 'https://c', 'f', 0, 0, 0)
                """, id, "deal-\(id)", total)
        }
    }

    @Test func migrations_areRecorded_once_andANewerDatabaseIsRefused() async throws {
        let configuration = try TestPostgres.freshDatabase()
        _ = try Store(postgres: configuration)
        let store = try Store(postgres: configuration)
        let versions = try await store.read { try $0.query("SELECT version FROM schema_migrations ORDER BY version").map { $0.int(0) } }
        #expect(versions == PostgresSchema.migrations.map(\.version))
        #expect(PostgresSchema.migrations.map(\.version) == Schema.migrations.map(\.version))
        try await store.write { _ = try $0.query("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)") }
        #expect(
            throws: StoreError.databaseNewerThanBinary(databaseVersion: 99, supportedVersion: Schema.migrations.count)
        ) { _ = try Store(postgres: configuration) }
    }

    @Test func twoStoresMigratingAtOnce_bothOpen() async throws {
        let configuration = try TestPostgres.freshDatabase()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 { group.addTask { _ = try Store(postgres: configuration) } }
            try await group.waitForAll()
        }
    }

    @Test func theRefundCap_isTheDatabases_andTheTransactionGoesOnAfterARefusal() async throws {
        let store = try Store(postgres: try TestPostgres.freshDatabase())
        try await Self.paidPayment(store, id: "pay_1", total: 1000)
        let (first, second, third) = try await store.write { db in
            (
                try RefundRecord.insertPending(
                    db, refundID: "re_1", paymentID: "pay_1", amount: 700, reason: nil, restock: false, cause: "request",
                    caller: nil, now: 1),
                try RefundRecord.insertPending(
                    db, refundID: "re_2", paymentID: "pay_1", amount: 301, reason: nil, restock: false, cause: "request",
                    caller: nil, now: 1),
                // Still in the same transaction: the refused insert did not end it.
                try RefundRecord.insertPending(
                    db, refundID: "re_3", paymentID: "pay_1", amount: 300, reason: nil, restock: false, cause: "request",
                    caller: nil, now: 1)
            )
        }
        #expect(first && !second && third)
        let committed = try await store.read { try RefundRecord.committedAmount($0, paymentID: "pay_1") }
        #expect(committed == 1000)
    }

    @Test func refundsFromTwoHostsAtOnce_neverPassTheCap() async throws {
        let configuration = try TestPostgres.freshDatabase()
        let hosts = [try Store(postgres: configuration), try Store(postgres: configuration)]
        try await Self.paidPayment(hosts[0], id: "pay_1", total: 1000)
        let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<20 {
                group.addTask {
                    try await hosts[index % 2].write { db in
                        try RefundRecord.insertPending(
                            db, refundID: "re_\(index)", paymentID: "pay_1", amount: 300, reason: nil, restock: false,
                            cause: "request", caller: nil, now: 1)
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(accepted == 3)
        let committed = try await hosts[1].read { try RefundRecord.committedAmount($0, paymentID: "pay_1") }
        #expect(committed == 900)
    }

    @Test func readModifyWritesOfTwoHosts_areSerialised_byRunningTheLoserAgain() async throws {
        let configuration = try TestPostgres.freshDatabase()
        let hosts = [try Store(postgres: configuration), try Store(postgres: configuration)]
        try await hosts[0].write { _ = try StockLedger.set($0, sku: "tee", onHand: 0, now: 0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<40 {
                group.addTask {
                    try await hosts[index % 2].write { db in
                        // A read, then a write from what was read: lost updates unless serialised.
                        let onHand = try StockLedger.get(db, sku: "tee")!.onHand
                        _ = try StockLedger.set(db, sku: "tee", onHand: onHand + 1, now: 1)
                    }
                }
            }
            try await group.waitForAll()
        }
        let onHand = try await hosts[1].read { try StockLedger.get($0, sku: "tee")!.onHand }
        #expect(onHand == 40)
    }

    @Test func aNameHeldByOneDeal_isRefusedToAnother_withoutEndingItsTransaction() async throws {
        let store = try Store(postgres: try TestPostgres.freshDatabase())
        try await Self.paidPayment(store, id: "pay_a", total: 1)
        try await Self.paidPayment(store, id: "pay_b", total: 1)
        let refused: Bool = try await store.write { db in
            try ClaimLedger.hold(db, paymentID: "pay_a", dealID: "deal-pay_a", keys: ["slug:alice"], now: 1)
            do {
                try ClaimLedger.hold(db, paymentID: "pay_b", dealID: "deal-pay_b", keys: ["slug:alice"], now: 1)
                return false
            } catch PaymentsError.claimTaken {
                try ClaimLedger.hold(db, paymentID: "pay_b", dealID: "deal-pay_b", keys: ["slug:bob"], now: 1)
                return true
            }
        }
        #expect(refused)
        let holders = try await store.read { db in
            (try ClaimLedger.get(db, key: "slug:alice").paymentID, try ClaimLedger.get(db, key: "slug:bob").paymentID)
        }
        #expect(holders.0 == "pay_a" && holders.1 == "pay_b")
    }

    @Test func theAuditTrail_isAppendOnly() async throws {
        let store = try Store(postgres: try TestPostgres.freshDatabase())
        try await store.write { try AuditLog.append($0, dealID: "d", paymentID: nil, kind: "k", now: 1) }
        for statement in ["UPDATE audit_events SET kind = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
            await #expect(throws: PostgresError.self) { try await store.write { _ = try $0.query(statement, arguments: []) } }
        }
        #expect(try await store.read { try AuditLog.entries($0, dealID: "d").count } == 1)
    }

    @Test func anAdvisoryLock_isHeldAgainstTheOtherHost_untilReleased_orItsSessionEnds() async throws {
        let configuration = try TestPostgres.freshDatabase()
        let one = try #require(try Store(postgres: configuration).advisoryLocks)
        let other = try #require(try Store(postgres: configuration).advisoryLocks)
        let lease = try #require(try await one.lockIfFree("deal:d1"))
        #expect(try await other.lockIfFree("deal:d1") == nil)
        #expect(try await other.lock("deal:d1", until: .now + .milliseconds(100)) == nil)
        // Another key is free.
        let unrelated = try #require(try await other.lockIfFree("deal:d2"))
        await other.unlock(unrelated)
        await one.unlock(lease)
        let taken = try #require(try await other.lock("deal:d1", until: .now + .seconds(2)))

        // A host whose connection dies (a crash) loses its locks at once.
        let store = try Store(postgres: configuration)
        try await store.write { db in
            _ = try db.query(
                """
                SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                """,
                arguments: [])
        }
        let afterCrash = try #require(try await one.lock("deal:d1", until: .now + .seconds(5)))
        await one.unlock(afterCrash)
        await other.unlock(taken)  // its session is gone: nothing to do, and no error
    }

    @Test func anUnreachableServer_isStorageTrouble_thatPassesWhenItAnswers() async throws {
        var configuration = try TestPostgres.freshDatabase()
        let store = try Store(postgres: configuration)
        #expect(await store.trouble() == nil)
        configuration.uri = "postgresql://127.0.0.1:1/nothing"
        #expect(throws: PostgresError.self) { _ = try Store(postgres: configuration) }
        let lost = PostgresError(sqlState: "57P01", message: "terminating connection due to administrator command")
        #expect(StorageTrouble.of(lost) == .unreachable("terminating connection due to administrator command"))
        #expect(StorageTrouble.of(lost)?.isPermanent == false)
    }

    @Test func aCallFindingEveryConnectionInUse_isBusyAtItsTimeout_andThePoolServesAfterwards() async throws {
        let store = try Store(postgres: try TestPostgres.freshDatabase(poolSize: 1, busyTimeoutMS: 200))
        async let holder: Void = store.write { _ in usleep(800_000) }  // holds the only connection
        try await Task.sleep(for: .milliseconds(100))
        let started = ContinuousClock.now
        await #expect(throws: StorageTrouble.busy) { try await store.read { _ in 1 } }
        #expect(ContinuousClock.now - started >= .milliseconds(150))
        try await holder
        #expect(try await store.read { try $0.queryFirst("SELECT 1")!.int(0) } == 1)
    }

    @Test func parametersAreNumbered_outsideQuotedText() {
        #expect(PostgresConnection.numberedParameters("SELECT ? , '?', ?") == "SELECT $1 , '?', $2")
        #expect(PostgresConnection.bytes(hex: "\\x00ff10") == [0, 255, 16])
        #expect(PostgresAdvisoryLocks.key("deal:a") == PostgresAdvisoryLocks.key("deal:a"))
        #expect(PostgresAdvisoryLocks.key("deal:a") != PostgresAdvisoryLocks.key("deal:b"))
    }
}

@Suite struct PostgresConfigurationTests {
    @Test func aPasswordInTheURI_isNeverShown() {
        #expect(
            PostgresConfiguration(uri: "postgresql://pay:s3cret@db.example:5432/payments?sslmode=require").redactedURI
                == "postgresql://pay:<redacted>@db.example:5432/payments?sslmode=require")
        #expect(
            PostgresConfiguration(uri: "postgresql:///payments?host=/run/postgresql&password=s3cret&user=pay")
                .redactedURI == "postgresql:///payments?host=/run/postgresql&password=<redacted>&user=pay")
        #expect(PostgresConfiguration(uri: "postgresql://pay@db/payments").redactedURI == "postgresql://pay@db/payments")
        let configuration = PostgresConfiguration(uri: "postgresql://pay:s3cret@db/payments", password: "t0p")
        for text in ["\(configuration)", String(reflecting: configuration)] {
            #expect(!text.contains("s3cret") && !text.contains("t0p"), "\(text)")
        }
    }

    @Test func theCredentialsPassword_comesLast_soItOverridesTheURI() {
        let parameters = PostgresConfiguration(uri: "postgresql:///p", password: "pw").connectionParameters
        #expect(parameters.last! == ("password", "pw"))
        #expect(parameters.firstIndex { $0.keyword == "connect_timeout" }! < parameters.firstIndex { $0.keyword == "dbname" }!)
        #expect(PostgresConfiguration.isURI("postgres://x") && !PostgresConfiguration.isURI("/var/lib/paymentsd/p.db"))
    }
}
