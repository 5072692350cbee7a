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
        private let served = Atomic<Bool>(false)

        init(channel: NIOAsyncChannel<InboundFrame, ByteBuffer>, peer: PeerCredentials) {
            self.channel = channel
            self.peer = peer
        }

        func markServed() { self.served.store(true, ordering: .relaxed) }

        deinit {
            if !self.served.load(ordering: .relaxed) {
                self.channel.outbound.finish()
                self.channel.channel.close(promise: nil)
            }
        }
    }

    private let configuration: Configuration
    private let dispatcher: Dispatcher
    private let metrics: RequestMetrics
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let onListening: @Sendable () -> Void

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
        let maxFrame = self.configuration.maxFrame
        let bootstrap = ServerBootstrap(group: self.eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            // A client may shut down its sending side and still read the answers to what it sent.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            PeerCredentials.of(channel).flatMapThrowing { peer in
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrame: maxFrame)))
                let asyncChannel = try NIOAsyncChannel<InboundFrame, ByteBuffer>(
                    wrappingChannelSynchronously: channel)
                return Connection(channel: asyncChannel, peer: peer)
            }
        }
        switch self.configuration.listener {
        case .path(let path):
            try await SocketPath.removeIfStale(path, eventLoopGroup: self.eventLoopGroup)
            let channel = try await bootstrap.bind(unixDomainSocketPath: path, childChannelInitializer: initializer)
            // The umask made the file owner-only; callers reach it through its group.
            guard chmod(path, 0o660) == 0 else {
                try? await channel.channel.close()
                throw RPCServerError.socketPath(path: path, errno: errno)
            }
            return channel
        case .inherited(let descriptor):
            return try await bootstrap.bind(descriptor, childChannelInitializer: initializer)
        }
    }

    private func serve(_ connection: Connection) async {
        connection.markServed()
        self.metrics.connectionOpened()
        defer { self.metrics.connectionClosed() }
        var logger = self.logger
        logger[metadataKey: "peer"] = "\(connection.peer)"
        let limiter = InFlightLimiter(limit: self.configuration.maxInFlightPerConnection)
        do {
            try await connection.channel.executeThenClose { frames, outbound in
                try await withGracefulShutdownHandler {
                    await withDiscardingTaskGroup { requests in
                        do {
                            for try await frame in frames {
                                let request: RequestEnvelope
                                switch frame {
                                case .invalid(let status):
                                    await self.closeWithError(status, outbound: outbound, logger: logger)
                                    return
                                case .body(let bytes):
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
                                requests.addTask {
                                    defer { limiter.release() }
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
        } catch {
            logger.debug("connection closed with an error", metadata: ["error": "\(error)"])
        }
    }

    /// Answers a connection-level error with request id 0; the caller then stops reading and closes.
    private func closeWithError(
        _ status: Status, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, logger: Logger
    ) async {
        self.metrics.frameError(reason: status.reason)
        logger.info("closing connection after a bad frame", metadata: ["reason": "\(status.reason)"])
        let frame = Frame.encode(ResponseEnvelope(requestID: 0, status: status).serialized())
        try? await outbound.write(ByteBuffer(bytes: frame))
    }

    private func describe(_ listener: Listener) -> String {
        switch listener {
        case .path(let path): path
        case .inherited(let descriptor): "inherited fd \(descriptor)"
        }
    }
}
