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
/// Each connection reads frames in order and runs every request as its own
/// child task, so answers go out as they are ready (pipelining, any order).
/// The connection's tasks run on its event loop (`EventLoopTaskExecutor`).
/// At `maxInFlightPerConnection` requests the reader stops pulling frames,
/// which stops reads on the socket. On graceful shutdown (SIGTERM) the
/// listener closes, every connection stops reading, and requests already
/// read run to completion before their connection closes.
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
    /// A connection accepted while the listener closes can be dropped by NIO
    /// before the accept loop sees it; an `NIOAsyncChannel` released without
    /// `executeThenClose` traps. So an unserved connection finishes its writer
    /// and closes its channel itself when released.
    private final class Connection: Sendable {
        let channel: NIOAsyncChannel<InboundFrame, ByteBuffer>
        let peer: PeerCredentials
        let account: MemoryBudget.Account
        /// Over the connection cap: answered and closed without reading.
        let refused: Bool
        private let served = Atomic<Bool>(false)

        init(
            channel: NIOAsyncChannel<InboundFrame, ByteBuffer>, peer: PeerCredentials, account: MemoryBudget.Account,
            refused: Bool
        ) {
            self.channel = channel
            self.peer = peer
            self.account = account
            self.refused = refused
        }

        func markServed() { self.served.store(true, ordering: .relaxed) }

        deinit {
            if !self.served.load(ordering: .relaxed) {
                self.channel.outbound.finish()
                self.channel.channel.close(promise: nil)
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
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            let refused = self.openConnections.wrappingAdd(1, ordering: .relaxed).newValue > configuration.maxConnections
            channel.closeFuture.whenComplete { _ in self.openConnections.wrappingSubtract(1, ordering: .relaxed) }
            self.noteAdmission(refused: refused)
            return PeerCredentials.of(channel).flatMapThrowing { peer in
                let account = budget.account(limit: configuration.connectionBudget)
                if refused {
                    // Answered and closed without reading a byte of what it sent.
                    try channel.syncOptions?.setOption(.autoRead, value: false)
                } else {
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionGuardHandler(limits: limits, account: account, metrics: metrics))
                }
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(FrameDecoder(maxFrame: configuration.maxFrame)))
                let asyncChannel = try NIOAsyncChannel<InboundFrame, ByteBuffer>(
                    wrappingChannelSynchronously: channel)
                return Connection(channel: asyncChannel, peer: peer, account: account, refused: refused)
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
            await self.refuse(connection)
            return
        }
        self.metrics.connectionOpened()
        defer { self.metrics.connectionClosed() }
        var logger = self.logger
        logger[metadataKey: "peer"] = "\(connection.peer)"
        let limiter = InFlightLimiter(limit: self.configuration.maxInFlightPerConnection)
        let executor = EventLoopTaskExecutor(connection.channel.channel.eventLoop)
        do {
            // The connection's reader and its requests run on its event loop: reading a frame, its
            // handler and writing its answer stay on one thread.
            try await withTaskExecutorPreference(executor) {
                try await self.serveRequests(connection, limiter: limiter, logger: logger)
            }
        } catch {
            logger.debug("connection closed with an error", metadata: ["error": "\(error)"])
        }
    }

    private func serveRequests(_ connection: Connection, limiter: InFlightLimiter, logger: Logger) async throws {
        try await connection.channel.executeThenClose { frames, outbound in
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { requests in
                    do {
                        for try await frame in frames {
                            let request: RequestEnvelope
                            var frameSize = 0
                            switch frame {
                            case .invalid(let status):
                                await self.closeWithError(status, outbound: outbound, logger: logger)
                                return
                            case .body(let bytes):
                                frameSize = Frame.headerSize + bytes.count
                                guard let decoded = try? RequestEnvelope(serialized: bytes) else {
                                    let status = Status(
                                        code: .invalidArgument, reason: "malformed_envelope",
                                        message: "the frame does not hold a payments.v1.Request")
                                    await self.closeWithError(status, outbound: outbound, logger: logger)
                                    return
                                }
                                request = decoded
                            }
                            await limiter.acquire()
                            let size = frameSize
                            requests.addTask {
                                defer {
                                    limiter.release()
                                    connection.account.release(size)
                                }
                                let response = await self.dispatcher.dispatch(request, peer: connection.peer)
                                let frame = Frame.encode(response.serialized())
                                // A client that left does not stop the requests it already sent.
                                try? await outbound.write(ByteBuffer(bytes: frame))
                            }
                        }
                    } catch {
                        logger.debug("connection read ended", metadata: ["error": "\(error)"])
                    }
                }
            } onGracefulShutdown: {
                connection.channel.channel.close(mode: .input, promise: nil)
            }
        }
    }

    /// Answers a connection over the cap, then closes it.
    private func refuse(_ connection: Connection) async {
        let status = Status(
            code: .resourceExhausted, reason: "too_many_connections",
            message: "the daemon serves \(self.configuration.maxConnections) connections at most; retry later")
        try? await connection.channel.executeThenClose { _, outbound in
            try? await outbound.write(ByteBuffer(bytes: Frame.connectionError(status)))
        }
    }

    /// Answers a connection-level error with request id 0; the caller then stops reading and closes.
    private func closeWithError(
        _ status: Status, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, logger: Logger
    ) async {
        self.metrics.frameError(reason: status.reason)
        logger.info("closing connection after a bad frame", metadata: ["reason": "\(status.reason)"])
        let frame = Frame.connectionError(status)
        try? await outbound.write(ByteBuffer(bytes: frame))
    }

    private func describe(_ listener: Listener) -> String {
        switch listener {
        case .path(let path): path
        case .inherited(let descriptor): "inherited fd \(descriptor)"
        }
    }
}
