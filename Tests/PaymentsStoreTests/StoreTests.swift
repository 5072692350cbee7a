import PaymentsStore
import PaymentsTesting
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct StoreTests {
    @Test func opens_inWAL_withFullSync_andForeignKeys() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        let pragmas = try await store.pragmas()
        #expect(pragmas.journalMode == "wal")
        #expect(pragmas.synchronous == 2)  // FULL
        #expect(pragmas.foreignKeys == 1)
    }

    @Test func migrations_areRecorded_andNotAppliedTwice() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file("p.db")
        _ = try Store(path: path)
        let store = try Store(path: path)
        let versions = try await store.read { try $0.query("SELECT version, name FROM schema_migrations").map { $0.int(0) } }
        #expect(versions == Schema.migrations.map(\.version))
    }

    @Test func databaseNewerThanTheBinary_isRefused_untouched() async throws {
        let directory = TemporaryDirectory()
        let path = directory.file("p.db")
        let store = try Store(path: path)
        try await store.write { try $0.query("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)") }
        #expect(throws: StoreError.databaseNewerThanBinary(databaseVersion: 99, supportedVersion: Schema.migrations.count)) {
            _ = try Store(path: path)
        }
    }

    @Test func aFailingMigration_rollsBackEveryMigrationOfTheRun() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("p.db")
        let migrator = Migrator(migrations: [
            Migration(version: 1, name: "good", sql: "CREATE TABLE a (x INTEGER) STRICT"),
            Migration(version: 2, name: "bad", sql: "CREATE TABLE oops ("),
        ])
        #expect(throws: SQLiteError.self) { _ = try Store(path: path, migrator: migrator) }
        let connection = try SQLiteConnection(path: path)
        let tables = try connection.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'a'")
        #expect(tables.isEmpty)
    }

    @Test func aThrowingWrite_isRolledBack() async throws {
        struct Boom: Error {}
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        await #expect(throws: Boom.self) {
            try await store.write { connection in
                try connection.query(
                    "INSERT INTO operations(id, kind, recovery_point, created_at, updated_at) VALUES ('op', 'k', 'start', 0, 0)")
                throw Boom()
            }
        }
        let count = try await store.read { try $0.queryFirst("SELECT count(*) FROM operations")!.int(0) }
        #expect(count == 0)
    }

    @Test func uniqueViolation_keepsTheExtendedCode() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        let insert = "INSERT INTO operations(id, kind, recovery_point, created_at, updated_at) VALUES ('op', 'k', 'start', 0, 0)"
        try await store.write { try $0.query(insert) }
        do {
            try await store.write { try $0.query(insert) }
            Issue.record("a second row with the same primary key was accepted")
        } catch let error as SQLiteError {
            #expect(error.code == .constraintPrimaryKey)
            #expect(error.code.primary == .constraint)
            switch error.code {
            case .constraint: break  // a primary pattern matches every extended code of its family
            default: Issue.record("\(error.code) did not match .constraint")
            }
            #expect(!(ResultCode.constraintUnique ~= error.code))
        }
    }

    @Test func concurrentWrites_areSerialised_noUpdateIsLost() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { try $0.executeScript("CREATE TABLE counter (n INTEGER NOT NULL) STRICT; INSERT INTO counter VALUES (0);") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<200 {
                group.addTask {
                    try await store.write { connection in
                        let n = try connection.queryFirst("SELECT n FROM counter")!.int(0)
                        try connection.query("UPDATE counter SET n = ?", n + 1)
                    }
                }
            }
            try await group.waitForAll()
        }
        let n = try await store.read { try $0.queryFirst("SELECT n FROM counter")!.int(0) }
        #expect(n == 200)
    }

    @Test func reads_seeOnlyCommittedData() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { connection in
            try connection.query(
                "INSERT INTO operations(id, kind, recovery_point, created_at, updated_at) VALUES ('a', 'k', 'start', 0, 0)")
        }
        let ids = try await store.read { try $0.query("SELECT id FROM operations").map { $0.string(0) } }
        #expect(ids == ["a"])
        await #expect(throws: SQLiteError.self) {
            try await store.read { try $0.query("DELETE FROM operations") }
        }
    }
}

/// Group commit: writes that queue up while a transaction commits share the next one, and each
/// still behaves as if it ran alone.
@Suite struct GroupCommitTests {
    struct Refused: Error {}

    @Test func writesQueuedTogether_shareOneCommit_andAFailingOneTakesOnlyItsOwnWork() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { try $0.executeScript("CREATE TABLE t (n INTEGER PRIMARY KEY) STRICT") }
        let transactionsBefore = store.committedTransactions

        try await withThrowingTaskGroup(of: Void.self) { group in
            // Holds the writer while the others queue up behind it.
            group.addTask {
                try await store.write { db in
                    usleep(300_000)
                    try db.query("INSERT INTO t VALUES (1000)")
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            for n in 0..<20 {
                group.addTask {
                    do {
                        try await store.write { db in
                            try db.query("INSERT INTO t VALUES (?)", n)
                            // Every third write fails after it wrote: its row must not stay.
                            if n % 3 == 0 { throw Refused() }
                            // A write that breaks a constraint fails alone too.
                            if n == 7 { try db.query("INSERT INTO t VALUES (1000)") }
                        }
                        #expect(n % 3 != 0 && n != 7, "write \(n) should have failed")
                    } catch is Refused {
                        #expect(n % 3 == 0)
                    } catch let error as SQLiteError {
                        #expect(n == 7, "write \(n): \(error)")
                    }
                }
            }
            try await group.waitForAll()
        }

        let rows = try await store.read { try $0.query("SELECT n FROM t ORDER BY n").map { $0.int(0) } }
        let expected = (0..<20).filter { $0 % 3 != 0 && $0 != 7 } + [1000]
        #expect(rows == expected)
        // The holder's transaction, then one for the twenty that queued behind it.
        #expect(store.committedTransactions - transactionsBefore == 2)
    }

    @Test func aWriteSeesTheWritesBeforeItInItsTransaction() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { try $0.executeScript("CREATE TABLE c (id INTEGER PRIMARY KEY, v INTEGER) STRICT") }
        try await store.write { try $0.query("INSERT INTO c VALUES (1, 0)") }
        // Each increments what the one before it left: read-modify-write stays serial.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await store.write { db in
                        let v = try db.queryFirst("SELECT v FROM c WHERE id = 1")!.int(0)
                        try db.query("UPDATE c SET v = ? WHERE id = 1", v + 1)
                    }
                }
            }
            try await group.waitForAll()
        }
        let v = try await store.read { try $0.queryFirst("SELECT v FROM c WHERE id = 1")!.int(0) }
        #expect(v == 50)
    }
}
