import NIOCore
import PaymentsWire

/// The first handler of every connection: admits each frame into the memory budget before its
/// body is read, holds reads back while a frame waits for room, and closes connections that keep
/// a frame half-sent or sit idle (`ConnectionGuard` decides; this handler carries it out).
final class ConnectionGuardHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var state: ConnectionGuard
    private let account: MemoryBudget.Account
    private let metrics: RequestMetrics
    private let tickInterval: TimeAmount
    private var context: ChannelHandlerContext?
    private var ticker: RepeatedTask?
    /// The size of the frame that waits for room in the budget.
    private var waitingFrame: Int?
    /// A read asked for by the pipeline while this handler held reads back.
    private var readHeld = false

    init(limits: ConnectionGuard.Limits, account: MemoryBudget.Account, metrics: RequestMetrics) {
        self.state = ConnectionGuard(limits: limits, now: Self.now())
        self.account = account
        self.metrics = metrics
        // Often enough that a timeout is kept to within a quarter of itself.
        let shortest = min(limits.frameTimeout, limits.idleTimeout) / 4
        self.tickInterval = .nanoseconds(max(Int64(shortest / .nanoseconds(1)), 10_000_000))
    }

    private static func now() -> Duration { .nanoseconds(Int64(NIODeadline.now().uptimeNanoseconds)) }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        self.ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: self.tickInterval, delay: self.tickInterval) { _ in
            handler.value.tick()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.ticker?.cancel()
        self.ticker = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.ticker?.cancel()
        self.ticker = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        for start in self.state.arrived(buffer.readableBytesView, now: Self.now()) {
            if start.arrivedWhole {
                self.account.charge(start.size)
            } else {
                self.admit(start.size)
            }
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.state.readOutstanding = false
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.state.answered(now: Self.now())
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if self.waitingFrame != nil {
            self.readHeld = true
        } else {
            self.state.readOutstanding = true
            context.read()
        }
    }

    /// Takes room for a frame whose body is still to come, or stops reading until there is some.
    private func admit(_ size: Int) {
        guard let context = self.context else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let wakeup: @Sendable () -> Void = { eventLoop.execute { handler.value.retryAdmission() } }
        if self.account.admit(size, wakeup: wakeup) {
            self.waitingFrame = nil
            self.state.paused = false
            if self.readHeld {
                self.readHeld = false
                self.state.readOutstanding = true
                context.read()
            }
        } else {
            self.waitingFrame = size
            self.state.paused = true
        }
    }

    private func retryAdmission() {
        guard let size = self.waitingFrame else { return }
        self.admit(size)
    }

    private func tick() {
        guard let context else { return }
        switch self.state.tick(now: Self.now(), requestsHeld: self.account.held > 0) {
        case .keep:
            return
        case .frameTimedOut:
            self.metrics.connectionTimedOut(reason: "frame")
            let status = Status(
                code: .deadlineExceeded, reason: "frame_timeout",
                message: "a frame started arriving and did not finish within \(self.state.limits.frameTimeout)")
            let frame = Frame.connectionError(status)
            context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(bytes: frame)), promise: nil)
            context.close(promise: nil)
        case .idle:
            self.metrics.connectionTimedOut(reason: "idle")
            context.close(promise: nil)
        }
        self.ticker?.cancel()
        self.ticker = nil
    }
}
