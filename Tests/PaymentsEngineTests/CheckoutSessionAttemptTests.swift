import Logging
import PaymentsDomain
import PaymentsEngine
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient
import Testing

/// A session create that outlived its `expires_at` margin (Stripe down for longer than a minute),
/// against the project's fake Stripe, with the daemon's clock in the test's hand.
@Suite(.serialized) struct CheckoutSessionAttemptTests {
    typealias World = EngineWorld

    @Test func aSessionCreateResentAfterTheMargin_opensTheCheckoutWithANewAttempt() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        try await world.store.write { _ = try StockLedger.set($0, sku: "tee", onHand: 5, now: 0) }
        // Stripe is down when the checkout is recorded, ten minutes before "now" at the fake: the row's
        // expires_at (ttl + 60 s margin ahead of then) is too soon by the time Stripe is back.
        let realNow = world.clock.value
        world.clock.withLock { $0 = realNow - 600 }
        try await world.control(
            "POST", "/_fake/faults",
            #"{"route": "POST /v1/checkout/sessions", "kind": "status", "status": 503, "times": 3}"#)
        await #expect(throws: PaymentsError.stripeUnavailable) {
            _ = try await world.checkout.createCheckout(world.request("d-outage"), deadline: .now + .seconds(30))
        }
        let pending = try await world.store.read { try PaymentRecord.latest($0, dealID: "d-outage")! }
        #expect(pending.status == .created && pending.checkoutSessionID == nil)

        // Back up, later: the resend under the first key is refused (expires_at too soon), which proves
        // Stripe never made that session; a new attempt opens it.
        world.clock.withLock { $0 = realNow }
        await world.janitor.sweep(force: true)

        let opened = try await world.store.read { try PaymentRecord.load($0, paymentID: pending.paymentID)! }
        #expect(opened.status == .created, "the deal keeps its one open checkout, not FAILED")
        #expect(opened.sessionAttempt == 1)
        #expect(opened.expiresAt >= realNow + 1800)
        let sessionID = try #require(opened.checkoutSessionID)
        #expect(try await world.sessionStatus(sessionID) == "open")
        #expect(try await world.stock().reserved == 2, "the stock stays held for the open checkout")
        // Three 503s, one refusal under the first key, one create under the attempt's key.
        #expect(try await world.requestCount("POST /v1/checkout/sessions") == 5)
        let keys = try await world.sessionCreateKeys()
        #expect(Set(keys) == ["paymentsd-\(pending.paymentID)-create-session", "paymentsd-\(pending.paymentID)-create-session-1"])
    }

    @Test func aSessionCreateRefusedForAnotherReason_failsTheCheckout() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        try await world.store.write { _ = try StockLedger.set($0, sku: "tee", onHand: 5, now: 0) }
        try await world.control(
            "POST", "/_fake/faults",
            #"{"route": "POST /v1/checkout/sessions", "kind": "status", "status": 400, "times": 1}"#)
        await #expect(throws: PaymentsError.self) {
            _ = try await world.checkout.createCheckout(world.request("d-refused"), deadline: .now + .seconds(30))
        }
        let failed = try await world.store.read { try PaymentRecord.latest($0, dealID: "d-refused")! }
        #expect(failed.status == .failed)
        #expect(failed.sessionAttempt == 0)
        #expect(try await world.stock().reserved == 0)
        #expect(try await world.requestCount("POST /v1/checkout/sessions") == 1)
    }
}

extension EngineWorld {
    /// The Idempotency-Key of every session create the fake saw, in order.
    func sessionCreateKeys() async throws -> [String] {
        let fake = self.fake
        return try await blocking {
            let log = try fake.control("GET", "/_fake/requests")["requests"] as? [[String: Any]] ?? []
            return log.filter { $0["route"] as? String == "POST /v1/checkout/sessions" }
                .compactMap { $0["idempotency_key"] as? String }
        }
    }
}
