import PaymentsEngine
import PaymentsRPC
import PaymentsWire

extension PaymentsMethods {
    /// `Health`: answers from the store, so a daemon whose database is gone is not reported healthy.
    func health(_ request: HealthRequest, _ context: CallContext) async throws -> HealthReply {
        let pending = try await self.store.read { connection in
            try OperationLog.pendingCount(connection)
        }
        return HealthReply(
            status: .serving, version: PaymentsVersion.current,
            uptimeSeconds: UInt64((ContinuousClock.now - self.startedAt).components.seconds),
            pendingOperations: UInt64(pending))
    }

    /// `Metrics`: Prometheus text of requests, latencies and connections.
    func metrics(_ request: MetricsRequest, _ context: CallContext) async throws -> MetricsReply {
        MetricsReply(text: self.metrics.exposition())
    }
}
