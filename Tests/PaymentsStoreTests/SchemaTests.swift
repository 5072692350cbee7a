import PaymentsStore
import PaymentsTesting
import Testing

/// Guarantees enforced by the database itself, with the lock table bypassed.
@Suite struct SchemaTests {
    private func insertPayment(
        _ db: any Connection, id: String, deal: String, status: String, mode: String = "PAYMENT", customer: String = ""
    ) throws {
        try db.query(
            """
            INSERT INTO payments (payment_id, deal_id, customer_ref, mode, status, currency, amount_total, success_url,
                cancel_url, fingerprint, expires_at, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, 'usd', 100, 'https://a', 'https://b', 'f', 0, 0, 0)
            """, id, deal, customer, mode, status)
    }

    private func hold(_ db: any Connection, key: String, payment: String, deal: String, state: String = "HELD") throws {
        try db.query(
            "INSERT INTO claims (key, payment_id, deal_id, state, created_at, updated_at) VALUES (?, ?, ?, ?, 0, 0)", key,
            payment, deal, state)
    }

    @Test func partialUniqueIndex_letsOnlyOneDealHoldOrTakeAName() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { db in
            try self.insertPayment(db, id: "pay_1", deal: "d1", status: "CREATED")
            try self.insertPayment(db, id: "pay_2", deal: "d2", status: "CREATED")
            try self.hold(db, key: "slug:alice", payment: "pay_1", deal: "d1")
        }
        for state in ["HELD", "TAKEN"] {
            await #expect(throws: SQLiteError.self, "a second \(state) row for one name") {
                try await store.write { try self.hold($0, key: "slug:alice", payment: "pay_2", deal: "d2", state: state) }
            }
        }
        // Released names are history: the name is free for the next deal.
        try await store.write { db in
            try db.query("UPDATE claims SET state = 'RELEASED' WHERE payment_id = 'pay_1'")
            try self.hold(db, key: "slug:alice", payment: "pay_2", deal: "d2")
        }
    }

    @Test func partialUniqueIndex_refusesASecondOpenSubscriptionCheckoutForACustomer() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write {
            try self.insertPayment($0, id: "pay_1", deal: "d1", status: "CREATED", mode: "SUBSCRIPTION", customer: "c1")
        }
        do {
            try await store.write {
                try self.insertPayment($0, id: "pay_2", deal: "d2", status: "CREATED", mode: "SUBSCRIPTION", customer: "c1")
            }
            Issue.record("a second open subscription checkout for one customer was accepted")
        } catch let error as SQLiteError {
            #expect(error.code == .constraintUnique)
        }
        // One-off payments of the customer and other customers are independent.
        try await store.write { db in
            try self.insertPayment(db, id: "pay_3", deal: "d3", status: "CREATED", customer: "c1")
            try self.insertPayment(db, id: "pay_4", deal: "d4", status: "CREATED", mode: "SUBSCRIPTION", customer: "c2")
        }
    }

    @Test func partialUniqueIndex_refusesASecondOpenCheckoutForADeal() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { try self.insertPayment($0, id: "pay_1", deal: "d1", status: "CREATED") }
        do {
            try await store.write { try self.insertPayment($0, id: "pay_2", deal: "d1", status: "CREATED") }
            Issue.record("a second CREATED payment for one deal was accepted")
        } catch let error as SQLiteError {
            #expect(error.code == .constraintUnique)
        }
        // Closed checkouts do not count, and other deals are independent.
        try await store.write { db in
            try self.insertPayment(db, id: "pay_3", deal: "d1", status: "FAILED")
            try self.insertPayment(db, id: "pay_4", deal: "d2", status: "CREATED")
            try db.query("UPDATE payments SET status = 'EXPIRED' WHERE payment_id = 'pay_1'")
            try self.insertPayment(db, id: "pay_5", deal: "d1", status: "CREATED")
        }
    }

    @Test func stockCannotBeReservedBeyondOnHand_evenByADirectWrite() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { try $0.query("INSERT INTO stock VALUES ('tee', 1, 1, 0)") }
        await #expect(throws: SQLiteError.self) {
            try await store.write { try $0.query("UPDATE stock SET reserved = 2 WHERE sku = 'tee'") }
        }
    }

    @Test func auditTrail_isAppendOnly() async throws {
        let directory = TemporaryDirectory()
        let store = try Store(path: directory.file("p.db"))
        try await store.write { try $0.query("INSERT INTO audit_events (at, kind) VALUES (1, 'x')") }
        await #expect(throws: SQLiteError.self) { try await store.write { try $0.query("UPDATE audit_events SET kind = 'y'") } }
        await #expect(throws: SQLiteError.self) { try await store.write { try $0.query("DELETE FROM audit_events") } }
    }
}
