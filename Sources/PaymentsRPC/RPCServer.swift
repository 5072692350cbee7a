import CSystemShims
import Logging
import NIOCore
import NIOPosix
import PaymentsWire
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Serves the wire protocol on a Unix socket (protocol.md sections 1-3).
///
/// Each connection's frames are decoded and run by its `RequestHandler`, every request as its own
/// task on the connection's event loop, so answers go out as they are ready (pipelining, any
/// order). At `maxInFlightPerConnection` requests the handler stops asking for socket reads. On
/// graceful shutdown (SIGTERM) the listener closes, every connection's input is shut down, and
/// requests already read run to completion before their connection closes.
public final class RPCServer: Service, Sendable {
    public enum Listener: Sendable, Equatable {
        /// Bind a new socket at the path (mode 0660); a stale socket file is replaced.
        case path(String)
        /// A listening socket inherited from systemd (LISTEN_FDS).
        case inherited(descriptor: Int32)
    }

    public struct Configuration: Sendable {
        public var listener: Listener
        public var maxFrame: Int = Frame.defaultMaxFrame
        public var maxInFlightPerConnection: Int = 128
        /// Connections past this are answered `too_many_connections` and closed.
        public var maxConnections: Int = 512
        /// How long a started frame may take to arrive (counting only time spent waiting for it).
        public var frameTimeout: Duration = .seconds(10)
        /// How long a connection with nothing in flight may send nothing.
        public var idleTimeout: Duration = .seconds(300)
        /// Bytes of request frames read and not yet answered, for the server and for one connection.
        public var memoryBudget: Int = 32 << 20
        public var connectionBudget: Int = 4 << 20

        public init(listener: Listener) {
            self.listener = listener
        }
    }

    /// An accepted connection on its way from NIO's accept path to `serve`.
    ///
    /// A connection accepted while the listener closes can be dropped by NIO before the accept
    /// loop sees it; its handler would go on serving it with nobody waiting for it to drain. So an
    /// unserved connection closes its channel itself when released.
    private final class Connection: Sendable {
        let channel: any Channel
        let account: MemoryBudget.Account
        /// Over the connection cap: answered and closed without reading.
        let refused: Bool
        /// Succeeds once the channel is closed and none of its requests is in flight.
        let drained: EventLoopFuture<Void>
        private let served = Atomic<Bool>(false)

        init(channel: any Channel, account: MemoryBudget.Account, refused: Bool, drained: EventLoopFuture<Void>) {
            self.channel = channel
            self.account = account
            self.refused = refused
            self.drained = drained
        }

        func markServed() { self.served.store(true, ordering: .relaxed) }

        deinit {
            if !self.served.load(ordering: .relaxed) {
                self.channel.close(promise: nil)
                self.account.close()
            }
        }
    }

    private let configuration: Configuration
    private let dispatcher: Dispatcher
    private let metrics: RequestMetrics
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let onListening: @Sendable () -> Void
    private let budget: MemoryBudget
    private let openConnections = Atomic<Int>(0)
    /// Whether connections are being refused at the cap now: the episode is logged once.
    private let refusing = Atomic<Bool>(false)

    public init(
        configuration: Configuration, dispatcher: Dispatcher, metrics: RequestMetrics, logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: @escaping @Sendable () -> Void = {}
    ) {
        self.configuration = configuration
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.onListening = onListening
        // Once the clients that filled the budget have gone, the memory their frames took goes
        // back to the kernel instead of staying in the heap.
        self.budget = MemoryBudget(limit: configuration.memoryBudget, onDrained: { paymentsd_malloc_trim() })
    }

    public func run() async throws {
        let listener = try await self.bind()
        self.logger.notice("listening", metadata: ["socket": "\(self.describe(self.configuration.listener))"])
        self.onListening()
        try await withGracefulShutdownHandler {
            try await listener.executeThenClose { connections in
                await withDiscardingTaskGroup { group in
                    do {
                        for try await connection in connections {
                            group.addTask { await self.serve(connection) }
                        }
                    } catch {
                        self.logger.error("accepting connections failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.notice("shutting down: no new connections, finishing requests in flight")
            listener.channel.close(promise: nil)
        }
        if case .path(let path) = self.configuration.listener { unlink(path) }
        self.logger.notice("all connections closed")
    }

    private func bind() async throws -> NIOAsyncChannel<Connection, Never> {
        let configuration = self.configuration
        let limits = ConnectionGuard.Limits(
            maxFrame: configuration.maxFrame, frameTimeout: configuration.frameTimeout,
            idleTimeout: configuration.idleTimeout)
        let (logger, metrics, budget) = (self.logger, self.metrics, self.budget)
        let listening: Int32
        switch configuration.listener {
        case .path(let path):
            try await SocketPath.removeIfStale(path, eventLoopGroup: self.eventLoopGroup)
            listening = try ListeningSocket.bind(path: path, backlog: 256)
            // The umask made the file owner-only; callers reach it through its group.
            guard chmod(path, 0o660) == 0 else {
                let code = errno
                close(listening)
                throw RPCServerError.socketPath(path: path, errno: code)
            }
        case .inherited(let descriptor):
            listening = descriptor
        }
        let bootstrap = ServerBootstrap(group: self.eventLoopGroup)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptErrorObserver(listening: listening, logger: logger, metrics: metrics))
                }
            }
            // A client may shut down its sending side and still read the answers to what it sent.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // One socket read per read event: a connection paused for the budget holds at most one
            // read's bytes beyond its admitted frames.
            .childChannelOption(.maxMessagesPerRead, value: 1)
        let (dispatcher, maxInFlight) = (self.dispatcher, configuration.maxInFlightPerConnection)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            let refused = self.openConnections.wrappingAdd(1, ordering: .relaxed).newValue > configuration.maxConnections
            channel.closeFuture.whenComplete { _ in self.openConnections.wrappingSubtract(1, ordering: .relaxed) }
            self.noteAdmission(refused: refused)
            return PeerCredentials.of(channel).flatMapThrowing { peer in
                let account = budget.account(limit: configuration.connectionBudget)
                let drained = channel.eventLoop.makePromise(of: Void.self)
                if refused {
                    // Answered and closed without reading a byte of what it sent.
                    try channel.syncOptions?.setOption(.autoRead, value: false)
                    channel.closeFuture.cascade(to: drained)
                    return Connection(channel: channel, account: account, refused: true, drained: drained.futureResult)
                }
                var connectionLogger = logger
                connectionLogger[metadataKey: "peer"] = "\(peer)"
                let shared = RequestHandler.Context(
                    dispatcher: dispatcher, peer: peer, account: account, metrics: metrics, logger: connectionLogger)
                let handlers: [any ChannelHandler] = [
                    ConnectionGuardHandler(limits: limits, account: account, metrics: metrics),
                    ByteToMessageHandler(FrameDecoder(maxFrame: configuration.maxFrame)),
                    RequestHandler(shared, maxInFlight: maxInFlight, eventLoop: channel.eventLoop, drained: drained),
                ]
                try channel.pipeline.syncOperations.addHandlers(handlers)
                return Connection(channel: channel, account: account, refused: false, drained: drained.futureResult)
            }
        }
        return try await bootstrap.bind(listening, childChannelInitializer: initializer)
    }

    /// Logs the start and the end of an episode of refusals at the cap, once each.
    private func noteAdmission(refused: Bool) {
        if refused {
            self.metrics.connectionRefused()
            if !self.refusing.exchange(true, ordering: .relaxed) {
                self.logger.error(
                    "refusing connections: the cap is reached",
                    metadata: ["max_connections": "\(self.configuration.maxConnections)"])
            }
        } else if self.refusing.exchange(false, ordering: .relaxed) {
            self.logger.notice("accepting connections again: below the cap")
        }
    }

    private func serve(_ connection: Connection) async {
        connection.markServed()
        defer { connection.account.close() }
        if connection.refused {
            let status = Status(
                code: .resourceExhausted, reason: "too_many_connections",
                message: "the daemon serves \(self.configuration.maxConnections) connections at most; retry later")
            let channel = connection.channel
            channel.writeAndFlush(ByteBuffer(bytes: Frame.connectionError(status))).whenComplete { _ in
                channel.close(promise: nil)
            }
            try? await connection.drained.get()
            return
        }
        self.metrics.connectionOpened()
        defer { self.metrics.connectionClosed() }
        await withGracefulShutdownHandler {
            // The handler serves the connection; this waits until it is closed and drained.
            try? await connection.drained.get()
        } onGracefulShutdown: {
            connection.channel.close(mode: .input, promise: nil)
        }
    }

    private func describe(_ listener: Listener) -> String {
        switch listener {
        case .path(let path): path
        case .inherited(let descriptor): "inherited fd \(descriptor)"
        }
    }
}
