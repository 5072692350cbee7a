import PaymentsStore
import PaymentsTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Storage conditions reach callers as `StorageTrouble`, never as SQLite errors, and a write is
/// never acknowledged when its file is gone or its caller stopped waiting.
@Suite struct StorageTroubleTests {
    private static func table(_ store: Store) async throws {
        try await store.write { try $0.executeScript("CREATE TABLE t (v INTEGER)") }
    }

    /// A store with a 10 s busy timeout, and another connection (as another process would) holding
    /// the database's write lock.
    private static func storeLockedByAnother(_ path: String) async throws -> (Store, Connection) {
        let store = try Store(path: path, busyTimeoutMS: 10_000)
        try await Self.table(store)
        let other = try SQLiteConnection(path: path)
        try other.executeScript("BEGIN IMMEDIATE")
        return (store, other)
    }

    private static func count(_ store: Store) async throws -> Int {
        try await store.read { try $0.queryFirst("SELECT count(*) FROM t")!.int(0) }
    }

    @Test func aDatabaseUnlinkedUnderTheStore_failsTheNextWrite_andEveryOneAfter() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file("p.db")
        let changes = Shared<[StorageTrouble?]>([])
        let store = try Store(path: path, onConditionChange: { trouble in changes.withLock { $0.append(trouble) } })
        try await Self.table(store)
        #expect(await store.trouble() == nil)
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        await #expect(throws: StorageTrouble.unavailable("the database file \(path) was removed or replaced")) {
            try await store.write { try $0.query("INSERT INTO t VALUES (1)") }
        }
        await #expect(throws: StorageTrouble.self) { try await store.write { try $0.query("INSERT INTO t VALUES (2)") } }
        await #expect(throws: StorageTrouble.self) { try await Self.count(store) }
        #expect(await store.trouble()?.isPermanent == true)
        #expect(changes.withLock { $0.count } == 1, "one episode is reported once")
    }

    @Test func anUnlinkedDatabase_isNoticedWithoutAWrite() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file("p.db")
        let store = try Store(path: path)
        try await Self.table(store)
        unlink(path)
        #expect(await store.trouble()?.isPermanent == true)
    }

    @Test func aLockHeldByAnotherProcess_isBusy_withinTheCallersDeadline_andPassesWhenReleased() async throws {
        let directory = TemporaryDirectory()
        let (store, other) = try await Self.storeLockedByAnother(directory.file("p.db"))
        let start = ContinuousClock.now
        await #expect(throws: StorageTrouble.busy) {
            try await Store.$callDeadline.withValue(start + .milliseconds(300)) {
                try await store.write { try $0.query("INSERT INTO t VALUES (1)") }
            }
        }
        #expect(ContinuousClock.now - start < .seconds(2), "the busy wait ends at the caller's deadline")
        #expect(await store.trouble() == .busy)
        try other.executeScript("ROLLBACK")
        try await store.write { try $0.query("INSERT INTO t VALUES (1)") }
        #expect(await store.trouble() == nil)
        #expect(try await Self.count(store) == 1)
    }

    @Test func aWriteWhoseDeadlinePassesInTheQueue_isNotRun() async throws {
        let directory = TemporaryDirectory()
        let (store, other) = try await Self.storeLockedByAnother(directory.file("p.db"))
        let start = ContinuousClock.now
        // The first write holds the writer while it waits for the lock; the second queues behind it.
        async let first: Void = Store.$callDeadline.withValue(start + .seconds(3)) {
            _ = try? await store.write { try $0.query("INSERT INTO t VALUES (1)") }
        }
        // Long enough for the first write to reach the writer even on a loaded machine.
        try await Task.sleep(for: .milliseconds(500))
        await #expect(throws: StorageTrouble.deadlinePassed) {
            try await Store.$callDeadline.withValue(start + .seconds(1)) {
                try await store.write { try $0.query("INSERT INTO t VALUES (2)") }
            }
        }
        await first
        try other.executeScript("ROLLBACK")
        #expect(try await Self.count(store) == 0, "neither write changed anything")
    }
}
