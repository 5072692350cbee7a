import Logging
import NIOCore
import PaymentsWire

/// The last handler of a connection: decodes each frame's envelope, runs its request, writes its
/// answer, and closes the connection once it is drained (`RequestFlow` decides; this carries it out).
///
/// Each request is one task on the connection's event loop (`EventLoopTaskExecutor`), so reading
/// the frame, the handler and writing the answer stay on one thread; answers go out as they are
/// ready (pipelining, any order). There is no async sequence between the socket and the dispatcher
/// and no writer task after it: in the profile of issue 13, NIOAsyncChannel's producer, its writer
/// and the task per connection reading from it cost more than the request itself. Answers written
/// while other requests of the connection are in flight share one flush, issued after the
/// requests that were ready in the same tick have written theirs.
final class RequestHandler: ChannelDuplexHandler {
    typealias InboundIn = InboundFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Context: Sendable {
        let dispatcher: Dispatcher
        let peer: PeerCredentials
        let account: MemoryBudget.Account
        let metrics: RequestMetrics
        let logger: Logger
    }

    /// A decoded request and the frame bytes it holds in the memory budget until it is answered.
    struct Pending {
        let request: RequestEnvelope
        let frameSize: Int
    }

    private let shared: Context
    private var flow: RequestFlow<Pending>
    private let executor: EventLoopTaskExecutor
    /// Succeeded once the channel is closed and no request of it is in flight.
    private let drained: EventLoopPromise<Void>
    private var isDrained = false
    private var context: ChannelHandlerContext?
    private var flushScheduled = false

    init(_ shared: Context, maxInFlight: Int, eventLoop: any EventLoop, drained: EventLoopPromise<Void>) {
        self.shared = shared
        self.flow = RequestFlow(limit: maxInFlight)
        self.executor = EventLoopTaskExecutor(eventLoop)
        self.drained = drained
    }

    deinit {
        // A channel torn down before it was active never reports inactive; whoever waits on it
        // must still be let go (and NIO traps on a promise dropped unfulfilled).
        if !self.isDrained { self.drained.succeed(()) }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request: RequestEnvelope
        let frameSize: Int
        switch self.unwrapInboundIn(data) {
        case .invalid(let status):
            self.connectionError(status, context: context)
            return
        case .body(let bytes):
            frameSize = Frame.headerSize + bytes.count
            guard let decoded = try? RequestEnvelope(serialized: bytes) else {
                let status = Status(
                    code: .invalidArgument, reason: "malformed_envelope",
                    message: "the frame does not hold a payments.v1.Request")
                self.connectionError(status, context: context)
                return
            }
            request = decoded
        }
        switch self.flow.frameArrived(Pending(request: request, frameSize: frameSize)) {
        case .run(let pending): self.start(pending, context: context)
        case .wait: return
        case .drop(let pending):
            // Past a connection-level error or the end of input: the frame is not run.
            self.shared.account.release(pending.frameSize)
        }
    }

    private func start(_ pending: Pending, context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let (shared, eventLoop) = (self.shared, context.eventLoop)
        Task(executorPreference: self.executor) {
            let response = await shared.dispatcher.dispatch(pending.request, peer: shared.peer)
            let frame = Frame.encode(response.serialized())
            shared.account.release(pending.frameSize)
            if eventLoop.inEventLoop {
                handler.value.finished(frame)
            } else {
                eventLoop.execute { handler.value.finished(frame) }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client shut down its sending side, or the daemon is shutting down: answer what
            // was read, then close.
            self.stopReading(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let (drained, dropped) = self.flow.channelClosed()
        for pending in dropped { self.shared.account.release(pending.frameSize) }
        if drained { self.markDrained() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.shared.logger.debug("connection failed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        switch self.flow.readRequested() {
        case .read: context.read()
        case .hold: return
        }
    }

    /// A request's answer is ready, on the event loop.
    private func finished(_ frame: [UInt8]) {
        switch self.flow.requestFinished() {
        case .answer(let next, let thenRead, let thenClose):
            guard let context = self.context else { return }
            context.write(self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
            if let next { self.start(next, context: context) }
            if thenClose {
                context.flush()
                context.close(promise: nil)
                return
            }
            self.flushSoon(context: context)
            if thenRead { context.read() }
        case .drop(let drained):
            if drained { self.markDrained() }
        }
    }

    private func markDrained() {
        guard !self.isDrained else { return }
        self.isDrained = true
        self.drained.succeed(())
    }

    /// Flushes now when this was the connection's only request in flight; otherwise once the
    /// requests that are ready in this tick have written their answers.
    private func flushSoon(context: ChannelHandlerContext) {
        guard self.flow.inFlight > 0 else {
            context.flush()
            return
        }
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let handler = handler.value
            handler.flushScheduled = false
            handler.context?.flush()
        }
    }

    /// Answers a connection-level error with request id 0; requests in flight are still answered,
    /// then the connection closes.
    private func connectionError(_ status: Status, context: ChannelHandlerContext) {
        switch self.flow.phase {
        case .reading:
            self.shared.metrics.frameError(reason: status.reason)
            self.shared.logger.info("closing connection after a bad frame", metadata: ["reason": "\(status.reason)"])
            let frame = Frame.connectionError(status)
            context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
            self.stopReading(context: context)
        case .draining, .closed:
            return
        }
    }

    private func stopReading(context: ChannelHandlerContext) {
        switch self.flow.stopReading() {
        case .close:
            context.close(promise: nil)
        case .none:
            return
        }
    }
}
