import Logging
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
    struct World {
        let directory = TemporaryDirectory()
        let fake: FakeStripeProcess
        let store: Store
        // The fake checks expires_at against its own (real) clock: the daemon's clock starts there.
        let clock = Shared<Int64>(Int64(time(nil)))
        let checkout: CheckoutEngine
        let janitor: Janitor

        init() async throws {
            self.fake = try await blocking { try FakeStripeProcess() }
            self.store = try Store(path: self.directory.file("p.db"))
            let stripe = StripeClient(configuration: .init(baseURL: self.fake.url, secretKey: FakeStripeProcess.apiKey))
            let locks = KeyedLockTable<String>()
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let clock = self.clock
            self.checkout = CheckoutEngine(
                store: self.store, stripe: stripe, locks: locks, configuration: .init(), logger: logger,
                now: { clock.value })
            self.janitor = Janitor(
                checkout: self.checkout, events: EventInbox(store: self.store, checkout: self.checkout, locks: locks, logger: logger, now: { clock.value }),
                logger: logger)
        }

        func request(_ deal: String) -> CheckoutRequest {
            CheckoutRequest(
                dealID: deal, customerRef: "", mode: .payment, currency: "usd",
                items: [LineItemRecord(sku: "tee", name: "Tee", quantity: 2, unitAmount: 1500, priceID: "")],
                successURL: "https://shop.example/ok", cancelURL: "https://shop.example/no", onOpen: .returnExisting,
                metadata: [])
        }

        func stock() async throws -> StockLedger.Level {
            try await self.store.read { try StockLedger.get($0, sku: "tee")! }
        }

        func sessionStatus(_ id: String) async throws -> String? {
            let fake = self.fake
            return try await blocking { try fake.control("GET", "/v1/checkout/sessions/\(id)")["status"] as? String }
        }

        func complete(_ sessionID: String) async throws {
            let fake = self.fake
            _ = try await blocking {
                try fake.control("POST", "/_fake/sessions/\(sessionID)/complete", json: #"{"paid": true}"#).count
            }
        }
    }

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
