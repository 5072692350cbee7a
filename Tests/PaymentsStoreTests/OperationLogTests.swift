import PaymentsDomain
import PaymentsStore
import PaymentsTesting
import Testing

@Suite struct OperationLogTests {
    @Test func startingAnUnfinishedOperationAgain_continuesIt_unchanged() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        let record = try await store.write { db -> OperationLog.Record? in
            try OperationLog.start(db, .expireSession, dealID: "d", paymentID: "pay_1", recoveryPoint: .expiring, cause: .replaced, detail: "replaced", now: 1)
            try OperationLog.recordFailure(db, .expireSession, paymentID: "pay_1", error: "boom", now: 2)
            try OperationLog.start(db, .expireSession, dealID: "d", paymentID: "pay_1", recoveryPoint: .expiring, cause: .canceled, detail: "canceled", now: 3)
            return try OperationLog.find(db, .expireSession, paymentID: "pay_1")
        }
        #expect(record?.detail == "replaced")
        #expect(record?.cause == .replaced)
        #expect(record?.attempts == 1)
    }

    @Test func startingAFinishedOperationAgain_restartsItWithTheNewReason() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        let (record, pending) = try await store.write { db -> (OperationLog.Record?, Int64) in
            try OperationLog.start(db, .expireSession, dealID: "d", paymentID: "pay_1", recoveryPoint: .expiring, cause: .expiredByTime, detail: "expired_by_time", now: 1)
            try OperationLog.recordFailure(db, .expireSession, paymentID: "pay_1", error: "boom", now: 2)
            try OperationLog.finish(db, .expireSession, paymentID: "pay_1", now: 3)
            try OperationLog.start(db, .expireSession, dealID: "d", paymentID: "pay_1", recoveryPoint: .expiring, cause: .canceled, detail: "canceled", now: 4)
            return (try OperationLog.find(db, .expireSession, paymentID: "pay_1"), try OperationLog.pendingCount(db))
        }
        #expect(record?.detail == "canceled")
        #expect(record?.cause == .canceled)
        #expect(record?.attempts == 0)
        #expect(record?.recoveryPoint == .expiring)
        #expect(pending == 1)
    }
}
