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

/// The janitor against the project's fake Stripe, with the daemon's clock in the test's hand.
@Suite(.serialized) struct JanitorTests {
    typealias World = EngineWorld

    @Test func anOverdueCheckout_isExpiredAtStripeFirst_thenReleased() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        try await world.store.write { _ = try StockLedger.set($0, sku: "tee", onHand: 5, now: 0) }
        let (payment, _) = try await world.checkout.createCheckout(world.request("d1"), deadline: .now + .seconds(30))
        #expect(try await world.stock().reserved == 2)

        // Not yet overdue: nothing happens.
        var report = await world.janitor.sweep(force: false)
        #expect(report.expired == 0)

        world.clock.withLock { $0 = payment.expiresAt + Janitor.expiryGrace }
        report = await world.janitor.sweep(force: false)
        #expect(report.expired == 1)
        let after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.status == .expired)
        #expect(try await world.stock().reserved == 0)
        #expect(try await world.sessionStatus(payment.checkoutSessionID!) == "expired")
        #expect(await world.janitor.sweep(force: false).expired == 0)  // once
    }

    @Test func anOverdueCheckoutPaidAtStripe_isFulfilledNotExpired() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        try await world.store.write { _ = try StockLedger.set($0, sku: "tee", onHand: 5, now: 0) }
        let (payment, _) = try await world.checkout.createCheckout(world.request("d2"), deadline: .now + .seconds(30))
        try await world.complete(payment.checkoutSessionID!)

        world.clock.withLock { $0 = payment.expiresAt + Janitor.expiryGrace }
        let report = await world.janitor.sweep(force: false)
        #expect(report.expired == 0)
        let after = try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)! }
        #expect(after.status == .paid)
        #expect(after.orderID != nil)
        let stock = try await world.stock()
        #expect(stock.onHand == 3 && stock.reserved == 0)
    }
}
