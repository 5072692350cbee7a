import Logging
import PaymentsRPC
import PaymentsWire
import ServiceLifecycle

/// Runs an `RPCServer` in this process on a socket in a temporary directory,
/// for tests that speak the real wire protocol without starting the daemon.
public enum InProcessServer {
    /// Starts a server with `table`, runs `body` with the socket path and the
    /// service group (to trigger a graceful shutdown), then shuts the server down.
    public static func with<Result: Sendable>(
        table: MethodTable,
        interceptors: [any ServerInterceptor] = [],
        policy: CallerPolicy = CallerPolicy(allowedGroups: [], adminGroups: []),
        dispatcherConfiguration: Dispatcher.Configuration = .init(),
        maxFrame: Int = Frame.defaultMaxFrame,
        maxInFlight: Int = 128,
        metrics: RequestMetrics = RequestMetrics(),
        _ body: @Sendable (_ socketPath: String, _ group: ServiceGroup) async throws -> Result
    ) async throws -> Result {
        let directory = TemporaryDirectory()
        let path = directory.file("s.sock")
        var logger = Logger(label: "paymentsd.test")
        logger.logLevel = .warning
        let dispatcher = Dispatcher(
            table: table, interceptors: interceptors, policy: policy, metrics: metrics,
            configuration: dispatcherConfiguration, logger: logger)
        var configuration = RPCServer.Configuration(listener: .path(path))
        configuration.maxFrame = maxFrame
        configuration.maxInFlightPerConnection = maxInFlight
        let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
        let server = RPCServer(
            configuration: configuration, dispatcher: dispatcher, metrics: metrics, logger: logger,
            onListening: { listeningContinuation.yield() })
        let group = ServiceGroup(services: [server], logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for await _ in listening { break }
            do {
                let result = try await body(path, group)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                try? await tasks.waitForAll()
                throw error
            }
        }
    }
}
