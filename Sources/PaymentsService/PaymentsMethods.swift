import PaymentsRPC
import PaymentsStore
import PaymentsWire

/// The methods of `payments.v1.Payments` this build serves, over the store
/// and the engine. Handlers translate wire messages to domain calls and back;
/// errors cross to the RPC layer as `RPCError` or `RPCErrorConvertible`.
public struct PaymentsMethods: Sendable {
    let store: Store
    let metrics: RequestMetrics
    let startedAt: ContinuousClock.Instant

    public init(store: Store, metrics: RequestMetrics, startedAt: ContinuousClock.Instant = .now) {
        self.store = store
        self.metrics = metrics
        self.startedAt = startedAt
    }

    /// The method table for the dispatcher.
    public func table() -> MethodTable {
        var table = MethodTable()
        table.register(.health, HealthRequest.self) { request, context in try await self.health(request, context) }
        table.register(.metrics, MetricsRequest.self) { request, context in try await self.metrics(request, context) }
        return table
    }
}
