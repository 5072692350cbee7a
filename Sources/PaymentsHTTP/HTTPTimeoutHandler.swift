import NIOCore

/// The endpoint handler's word to `HTTPTimeoutHandler` about the request in hand.
enum HTTPRequestProgress {
    /// The request arrived in full: its time limit stops.
    case received
    /// Its answer is written: the connection is idle until the next request's first byte.
    case answered
    /// It was refused while it still arrives (a body over the limit): the rest is read and dropped
    /// for a moment, so that the client reads the refusal instead of a reset, then the connection
    /// closes.
    case refused
}

/// Time limits on raw bytes, before the HTTP decoder: a request must arrive in full within
/// `requestTimeout` of its first byte (a client that trickles its headers or body is cut off with
/// 408), and a kept-alive connection may stay idle for `idleTimeout`.
///
/// It sits first in the pipeline so that it sees the first byte of a request, not only its parsed
/// head; the endpoint handler tells it how the request goes through `HTTPRequestProgress`, as an
/// outbound user event.
final class HTTPTimeoutHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case receiving
        case answering
        case closing
    }

    /// How long the rest of a refused request is read and dropped before the connection closes.
    static let drainAfterRefusal: TimeAmount = .seconds(2)

    private let requestTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var state = State.idle
    private var timer: Scheduled<Void>?

    init(requestTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
    }

    func channelActive(context: ChannelHandlerContext) {
        self.arm(self.idleTimeout, context: context, onTimeout: .idle)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.state {
        case .idle:
            self.state = .receiving
            self.arm(self.requestTimeout, context: context, onTimeout: .receiving)
        case .receiving, .answering, .closing:
            // The running limit holds; bytes of a pipelined next request wait for the answer.
            break
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let progress = event as? HTTPRequestProgress else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch progress {
        case .received:
            self.state = .answering
            self.timer?.cancel()
            self.timer = nil
        case .answered:
            self.state = .idle
            self.arm(self.idleTimeout, context: context, onTimeout: .idle)
        case .refused:
            self.state = .closing
            self.arm(Self.drainAfterRefusal, context: context, onTimeout: .closing)
        }
        promise?.succeed(())
    }

    private func arm(_ amount: TimeAmount, context: ChannelHandlerContext, onTimeout expected: State) {
        self.timer?.cancel()
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.timer = context.eventLoop.scheduleTask(in: amount) {
            handler.value.expired(expected, context: bound.value)
        }
    }

    private func expired(_ expected: State, context: ChannelHandlerContext) {
        self.timer = nil
        switch (expected, self.state) {
        case (.receiving, .receiving):
            // Written raw: the request never reached the handlers that frame answers.
            let answer = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            // A 79-byte write goes to the socket at once, before the close.
            context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: answer)), promise: nil)
            context.close(promise: nil)
        case (.idle, .idle), (.closing, .closing):
            context.close(promise: nil)
        case (.idle, .receiving), (.idle, .answering), (.idle, .closing), (.receiving, .idle), (.receiving, .answering),
            (.receiving, .closing), (.answering, _), (.closing, .idle), (.closing, .receiving), (.closing, .answering):
            // The state moved on since this timer was armed.
            return
        }
    }
}
