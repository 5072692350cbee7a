import Logging
import PaymentsDomain
import PaymentsEngine
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient

#if canImport(Glibc)
import Glibc
#endif

/// The engine against the project's fake Stripe, with the daemon's clock in the test's hand.
struct EngineWorld {
    let directory = TemporaryDirectory()
    let fake: FakeStripeProcess
    let store: Store
    // The fake checks expires_at against its own (real) clock: the daemon's clock starts there.
    let clock = Shared<Int64>(Int64(time(nil)))
    let checkout: CheckoutEngine
    let janitor: Janitor
    let events: EventInbox
    let locks: KeyedLockTable<String>

    init() async throws {
        self.fake = try await blocking { try FakeStripeProcess() }
        self.store = try Store(path: self.directory.file("p.db"))
        let stripe = StripeClient(configuration: .init(baseURL: self.fake.url, secretKey: FakeStripeProcess.apiKey))
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let clock = self.clock
        let engine = Engine(store: self.store, stripe: stripe, logger: logger, now: { clock.value })
        self.checkout = engine.checkout
        self.janitor = engine.janitor
        self.events = engine.events
        self.locks = engine.locks
    }

    /// A checkout of two tees of 1500.
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

    /// The customer pays the session at the fake.
    func complete(_ sessionID: String) async throws {
        try await self.control("POST", "/_fake/sessions/\(sessionID)/complete", #"{"paid": true}"#)
    }

    func control(_ method: String, _ path: String, _ json: String? = nil) async throws {
        let fake = self.fake
        _ = try await blocking { try fake.control(method, path, json: json).count }
    }

    /// How many requests the fake saw on `route` ("POST /v1/refunds").
    func requestCount(_ route: String) async throws -> Int {
        let fake = self.fake
        return try await blocking {
            let log = try fake.control("GET", "/_fake/requests")["requests"] as? [[String: Any]] ?? []
            return log.filter { $0["route"] as? String == route }.count
        }
    }
}
