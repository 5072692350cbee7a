import PaymentsEngine
import PaymentsStore
import PaymentsTesting
import Testing

/// Two lock tables on two stores of one PostgreSQL database: two hosts. A key held on one is held
/// for the other too, for as long as the holder's body runs, and free again once it returns.
@Suite(.enabled(if: TestPostgres.isAvailable, "needs PAYMENTSD_TEST_POSTGRES_URI (make test sets it)"))
struct CrossHostLockTests {
    @Test func aKeyHeldOnOneHost_makesTheOtherWait_untilItsBodyReturns() async throws {
        let configuration = try TestPostgres.freshDatabase()
        let hostA = KeyedLockTable<String>(crossHost: try Store(postgres: configuration).advisoryLocks)
        let hostB = KeyedLockTable<String>(crossHost: try Store(postgres: configuration).advisoryLocks)
        let (release, releaseNow) = AsyncStream<Void>.makeStream()
        let (held, heldNow) = AsyncStream<Void>.makeStream()
        async let holder: Void = hostA.withLock("deal:d1", deadline: .now + .seconds(30)) {
            heldNow.yield()
            for await _ in release { break }
        }
        for await _ in held { break }

        await #expect(throws: LockTimeout.self) {
            try await hostB.withLock("deal:d1", deadline: .now + .milliseconds(200)) { Issue.record("must not run") }
        }
        #expect(try await hostB.withLockIfFree("deal:d1") { Issue.record("must not run") } == nil)
        // Another key is not held up, and the timed-out waiter left nothing behind.
        #expect(try await hostB.withLock("deal:d2", deadline: .now + .seconds(5)) { 2 } == 2)
        #expect(hostB.trackedKeyCount == 0)

        releaseNow.yield()
        try await holder
        #expect(try await hostB.withLock("deal:d1", deadline: .now + .seconds(5)) { 1 } == 1)
        #expect(try await hostB.withLockIfFree("deal:d1") { 1 } == 1)
    }

    @Test func aWriteUnderALockLostWithItsSession_isRefused_andChangesNothing() async throws {
        let configuration = try TestPostgres.freshDatabase()
        let store = try Store(postgres: configuration)
        let host = KeyedLockTable<String>(crossHost: store.advisoryLocks)
        let other = try Store(postgres: configuration)
        try await host.withLock("deal:d1", deadline: .now + .seconds(5)) {
            // Still held: the write goes through.
            try await store.write { try Invariants.createProbeTable($0) }
            // The server ends the lock's session (as a restart would): the lock is gone.
            try await other.write { db in
                _ = try db.query(
                    """
                    SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    """, arguments: [])
            }
            await #expect(throws: StorageTrouble.self) { try await store.write { try Invariants.writeProbeRow($0) } }
        }
        let rows = try await other.read { try $0.query("SELECT count(*) FROM bench_commits", arguments: [])[0].int(0) }
        #expect(rows == 0)
        // Outside the lock, and under a new one, writes work again.
        try await store.write { try Invariants.writeProbeRow($0) }
        try await host.withLock("deal:d1", deadline: .now + .seconds(5)) {
            try await store.write { try Invariants.writeProbeRow($0) }
        }
    }

    @Test func aBodyThatThrows_stillLetsTheOtherHostIn() async throws {
        struct Failure: Error {}
        let configuration = try TestPostgres.freshDatabase()
        let hostA = KeyedLockTable<String>(crossHost: try Store(postgres: configuration).advisoryLocks)
        let hostB = KeyedLockTable<String>(crossHost: try Store(postgres: configuration).advisoryLocks)
        await #expect(throws: Failure.self) {
            try await hostA.withLock("customer:c1", deadline: .now + .seconds(5)) { throw Failure() }
        }
        #expect(try await hostB.withLockIfFree("customer:c1") { true } == true)
    }
}
