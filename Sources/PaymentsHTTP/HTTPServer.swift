import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PaymentsRPC
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The optional HTTP/1.1 endpoint (protocol.md section 8), for the two callers that speak only
/// HTTP: Stripe's webhook deliveries and Prometheus' scrapes, plus a health check.
///
/// HTTP is parsed by NIOHTTP1 (decoder limits on header size; `HTTPServerPipelineHandler` for
/// keep-alive and pipelined requests, one at a time; 400 for requests it cannot parse). On graceful
/// shutdown the listener closes, idle connections close, and a request in hand is answered first.
public final class HTTPServer: Service, Sendable {
    public struct Configuration: Sendable {
        public var listener: HTTPListener
        /// The longest webhook body taken; longer ones are answered 413.
        public var maxBody: Int = 1 << 20
        /// Header names and values of one request, in bytes; more is answered 400.
        public var maxHeaderBytes: Int = 32 << 10
        /// How long a request may take to arrive in full, from its first byte (then 408).
        public var requestTimeout: Duration = .seconds(10)
        /// How long a kept-alive connection may idle before it is closed.
        public var idleTimeout: Duration = .seconds(60)

        public init(listener: HTTPListener) {
            self.listener = listener
        }
    }

    private let configuration: Configuration
    private let gateway: HTTPGateway
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let isShuttingDown = Atomic<Bool>(false)
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let onListening: @Sendable (String) -> Void

    /// - Parameter onListening: told the address once the endpoint listens (with the port a
    ///   `:0` listener was given).
    public init(
        configuration: Configuration, dispatcher: Dispatcher, logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.gateway = HTTPGateway(dispatcher: dispatcher)
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.onListening = onListening
    }

    public func run() async throws {
        let channel = try await self.bind()
        let address = self.describe(channel)
        self.logger.notice("http endpoint listening", metadata: ["address": "\(address)"])
        self.onListening(address)
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            self.isShuttingDown.store(true, ordering: .relaxed)
            channel.close(promise: nil)
        }
        // Idle connections close now; one with a request in hand after its answer.
        let open = self.connections.withLock { Array($0.values) }
        for connection in open { connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        for connection in open { try? await connection.closeFuture.get() }
        if case .unix(let path) = self.configuration.listener { unlink(path) }
        self.logger.notice("http endpoint closed")
    }

    private func bind() async throws -> any Channel {
        let configuration = self.configuration
        let gateway = self.gateway
        let bootstrap = ServerBootstrap(group: self.eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    self.track(channel)
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(
                        HTTPTimeoutHandler(
                            requestTimeout: .init(configuration.requestTimeout), idleTimeout: .init(configuration.idleTimeout)))
                    try Self.addHTTPCodec(to: pipeline, configuration)
                    try pipeline.addHandler(
                        HTTPEndpointHandler(
                            gateway: gateway, maxBody: configuration.maxBody,
                            shuttingDown: { self.isShuttingDown.load(ordering: .relaxed) }))
                }
            }
        switch configuration.listener {
        case .tcp(let host, let port):
            return try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            let channel = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            // A reverse proxy reaches it through the socket's group, as callers reach the RPC socket.
            chmod(path, 0o660)
            return channel
        case .inherited(let descriptor):
            return try await bootstrap.withBoundSocket(descriptor).get()
        }
    }

    /// NIOHTTP1's part of a connection, with the configuration's header limits: keep-alive and
    /// pipelined requests handed over one at a time, 400 for what cannot be parsed. The fuzz
    /// target builds the same pipeline through this.
    static func addHTTPCodec(to pipeline: ChannelPipeline.SynchronousOperations, _ configuration: Configuration) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = configuration.maxHeaderBytes
        limits.maxHeaderFieldSize = configuration.maxHeaderBytes
        limits.maxHeaderFieldCount = 100
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: true, withOutboundHeaderValidation: true,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
    }

    private func track(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        self.connections.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in _ = self.connections.withLock { $0.removeValue(forKey: key) } }
    }

    private func describe(_ channel: any Channel) -> String {
        switch self.configuration.listener {
        case .tcp(let host, _):
            let port = channel.localAddress?.port ?? 0
            return HTTPListener.tcp(host: host, port: port).description
        case .unix, .inherited:
            return self.configuration.listener.description
        }
    }
}
