import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire
import StripeClient

#if canImport(Glibc)
import Glibc
#endif

/// The methods of `payments.v1.Payments` this build serves, over the store
/// and the engine. Handlers translate wire messages to domain calls and back;
/// refusals cross to the RPC layer as `PaymentsError` (see PaymentsError+RPC).
public struct PaymentsMethods: Sendable {
    let store: Store
    let metrics: RequestMetrics
    let checkout: CheckoutEngine
    let idempotency: RequestIdempotency
    let events: EventInbox
    let janitor: Janitor
    let catchUp: EventCatchUp
    let stripe: StripeClient
    let verifier: WebhookVerifier
    let startedAt: ContinuousClock.Instant
    let now: @Sendable () -> Int64

    public init(
        engine: Engine, metrics: RequestMetrics, verifier: WebhookVerifier, startedAt: ContinuousClock.Instant = .now,
        now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) }
    ) {
        self.store = engine.store
        self.metrics = metrics
        self.checkout = engine.checkout
        self.idempotency = RequestIdempotency(store: engine.store, locks: engine.locks, now: now)
        self.events = engine.events
        self.janitor = engine.janitor
        self.catchUp = engine.catchUp
        self.stripe = engine.stripe
        self.verifier = verifier
        self.startedAt = startedAt
        self.now = now
    }

    /// The stages every call passes through before its handler: the deadline of its writes, then
    /// request idempotency (whose own writes the deadline bounds too).
    public func interceptors() -> [any ServerInterceptor] { [StoreDeadline(), self.idempotency] }

    /// The method table for the dispatcher.
    public func table() -> MethodTable {
        var table = MethodTable()
        table.register(.health, HealthRequest.self) { request, context in try await self.health(request, context) }
        table.register(.metrics, MetricsRequest.self) { request, context in try await self.metrics(request, context) }
        table.register(.createCheckout, CreateCheckoutRequest.self, validate: CheckoutValidation.validate) {
            request, context in try await self.createCheckout(request, context)
        }
        table.register(.getPayment, PaymentRef.self) { request, context in try await self.getPayment(request) }
        table.register(.listPayments, PaymentRef.self) { request, context in try await self.listPayments(request) }
        table.register(.listEvents, PaymentRef.self) { request, context in try await self.listEvents(request) }
        table.register(.setStock, StockUpdate.self, validate: Self.validateStockUpdate) { update, context in
            try await self.setStock(update, context)
        }
        table.register(.adjustStock, StockAdjustment.self, validate: Self.validateStockAdjustment) {
            adjustment, context in try await self.adjustStock(adjustment, context)
        }
        table.register(.getStock, StockRef.self) { request, context in try await self.getStock(request) }
        table.register(.handleStripeEvent, StripeEvent.self) { request, context in
            try await self.handleStripeEvent(request, context)
        }
        table.register(.confirmCheckout, PaymentRef.self) { request, context in
            try await self.confirmCheckout(request, context)
        }
        table.register(.cancelCheckout, CancelRequest.self, validate: Self.validateCancel) { request, context in
            try await self.cancelCheckout(request, context)
        }
        table.register(.refundPayment, RefundRequest.self, validate: Self.validateRefund) { call, context in
            try await self.refundPayment(call, context)
        }
        table.register(.getClaim, ClaimRef.self) { request, context in try await self.getClaim(request) }
        table.register(.releaseClaim, ClaimRef.self, validate: Self.validateClaimRef) { ref, context in
            try await self.releaseClaim(ref, context)
        }
        table.register(.reconcile, ReconcileRequest.self) { _, _ in
            let report = await self.janitor.sweep(force: true, askingEveryOpen: true)
            return ReconcileReport(
                expired: UInt64(report.expired), resumed: UInt64(report.resumed), repaired: UInt64(report.repaired),
                orphans: UInt64(report.orphans), stuck: UInt64(report.stuck))
        }
        return table
    }
}
