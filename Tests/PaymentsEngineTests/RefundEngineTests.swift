import Logging
import PaymentsDomain
import PaymentsEngine
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Refunds against the project's fake Stripe, with the daemon's clock in the test's hand:
/// what happens past Stripe's 24 h idempotency-key window, and pending refunds whose
/// webhook never came.
@Suite(.serialized) struct RefundEngineTests {
    typealias World = EngineWorld

    @Test func aRefundResumedPastStripesKeyWindow_isLookedUpAtStripe_notSentAgain() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let payment = try await world.paidPayment("d-window")
        // Stripe makes the refund but the answer never arrives, on every attempt (libcurl also resends
        // a request whose reused connection died, under the same Idempotency-Key).
        try await world.control(
            "POST", "/_fake/faults", #"{"route": "POST /v1/refunds", "kind": "apply_then_drop", "times": 100}"#)
        await #expect(throws: PaymentsError.stripeUnavailable) {
            _ = try await world.refund(payment, amount: 1000, key: "k1")
        }
        let posts = try await world.requestCount("POST /v1/refunds")
        #expect(posts >= 3)

        // A day later the key is gone at Stripe: a blind resend would refund again.
        world.clock.withLock { $0 += 25 * 3600 }
        await world.janitor.sweep(force: true)

        #expect(try await world.requestCount("POST /v1/refunds") == posts)
        #expect(try await world.requestCount("GET /v1/refunds") >= 1)
        let after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.refunds.map(\.status) == [.succeeded])
        #expect(after.refunds.first?.stripeRefundID != nil)
        #expect(after.amountRefunded == 1000)
        #expect(after.status == .partiallyRefunded)
    }

    @Test func aRefundPastTheWindowThatStripeNeverMade_isSent() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let payment = try await world.paidPayment("d-window-none")
        // Refused before anything is applied, on every attempt: Stripe has no such refund.
        try await world.control(
            "POST", "/_fake/faults", #"{"route": "POST /v1/refunds", "kind": "status", "status": 503, "times": 3}"#)
        await #expect(throws: PaymentsError.stripeUnavailable) {
            _ = try await world.refund(payment, amount: 3000, key: "k1")
        }
        world.clock.withLock { $0 += 25 * 3600 }
        await world.janitor.sweep(force: true)
        let after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.refunds.map(\.status) == [.succeeded])
        #expect(after.status == .refunded)
        // Three refused attempts, then one that made it.
        #expect(try await world.requestCount("POST /v1/refunds") == 4)
    }

    @Test func aStripePendingRefundWhoseWebhookNeverCame_isAskedAboutByTheJanitor() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let payment = try await world.paidPayment("d-pending")
        try await world.control("POST", "/_fake/config", #"{"refund_status": "pending"}"#)
        let refund = try await world.refund(payment, amount: 3000, key: "k1")
        #expect(refund.status == .pending)
        try await world.control("POST", "/_fake/refunds/\(refund.stripeRefundID!)/resolve", #"{"status": "succeeded"}"#)
        // The Events API is down too, so the catch-up cannot bring the refund's event either.
        try await world.control(
            "POST", "/_fake/faults", #"{"route": "GET /v1/events", "kind": "status", "status": 500, "times": 100}"#)

        // Not stale yet: the webhook may still come.
        await world.janitor.sweep(force: false)
        var after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.refunds.map(\.status) == [.pending])

        world.clock.withLock { $0 += 3601 }
        await world.janitor.sweep(force: false)
        after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.refunds.map(\.status) == [.succeeded])
        #expect(after.status == .refunded)
        #expect(try await world.requestCount("GET /v1/refunds/{refund}") == 1)
    }

    @Test func theDatabaseRefusesRefundsBeyondTheAmountPaid() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let payment = try await world.paidPayment("d-trigger")
        // Straight at the table, past every guard in code: the trigger alone must refuse.
        let insert = """
            INSERT INTO refunds (refund_id, payment_id, amount, status, reason, origin, cause, created_at, updated_at)
            VALUES (?, ?, ?, 'PENDING', 'UNSPECIFIED', 'PAYMENTSD', 'request', 0, 0)
            """
        try await world.store.write { try $0.query(insert, "rfd_a", payment.paymentID, Int64(2000)) }
        await #expect(throws: SQLiteError.self) {
            try await world.store.write { try $0.query(insert, "rfd_b", payment.paymentID, Int64(1001)) }
        }
        try await world.store.write { try $0.query(insert, "rfd_c", payment.paymentID, Int64(1000)) }
        // A FAILED refund frees its amount again.
        try await world.store.write { try $0.query("UPDATE refunds SET status = 'FAILED' WHERE refund_id = 'rfd_a'") }
        try await world.store.write { try $0.query(insert, "rfd_d", payment.paymentID, Int64(2000)) }
    }
}

extension EngineWorld {
    /// A paid payment of 3000, through ConfirmCheckout.
    func paidPayment(_ deal: String) async throws -> PaymentRecord {
        let (payment, _) = try await self.checkout.createCheckout(self.request(deal), deadline: .now + .seconds(30))
        try await self.complete(payment.checkoutSessionID!)
        return try await self.checkout.confirmCheckout(.payment(payment.paymentID), deadline: .now + .seconds(30))
    }

    func refund(_ payment: PaymentRecord, amount: Int64, key: String) async throws -> RefundRecord {
        try await self.checkout.refunds.refund(
            RefundEngine.Request(
                payment: .payment(payment.paymentID), amount: amount, reason: .requestedByCustomer, restock: false,
                callerUID: 0, idempotencyKey: key, requestHash: Array(key.utf8)),
            deadline: .now + .seconds(30)
        ).refund
    }
}

extension RefundEngineTests {
    @Test func aRefundSettledAtStripeWhileNoWebhookCame_isCaughtUpFromTheEventsAPI() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let payment = try await world.paidPayment("d-caught-up")
        try await world.control("POST", "/_fake/config", #"{"refund_status": "pending"}"#)
        let refund = try await world.refund(payment, amount: 3000, key: "k1")
        try await world.control("POST", "/_fake/refunds/\(refund.stripeRefundID!)/resolve", #"{"status": "succeeded"}"#)
        await world.janitor.sweep(force: false)
        let after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.refunds.map(\.status) == [.succeeded])
        // From the event, not from asking about the refund.
        #expect(try await world.requestCount("GET /v1/refunds/{refund}") == 0)
    }
}
