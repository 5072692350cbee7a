import NIOCore
import NIOHTTP1

/// The last handler of an HTTP connection: routes each request, gathers the webhook's body up to
/// its limit, asks the gateway, and writes the answer. `HTTPServerPipelineHandler` before it hands
/// over one request at a time, so a kept-alive connection's answers keep their order.
final class HTTPEndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case awaitingHead
        /// A request whose body is gathered (`takesBody`) or read and dropped.
        case body(HTTPRequestHead, HTTPRoute, gathered: ByteBuffer?)
        /// Its answer is being made; nothing more arrives before it is written.
        case answering
        /// A body over the limit was refused: the connection closes once that answer is written.
        case refused
    }

    private let gateway: HTTPGateway
    private let maxBody: Int
    private let shuttingDown: @Sendable () -> Bool
    private var state = State.awaitingHead

    init(gateway: HTTPGateway, maxBody: Int, shuttingDown: @escaping @Sendable () -> Bool) {
        self.gateway = gateway
        self.maxBody = maxBody
        self.shuttingDown = shuttingDown
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (self.unwrapInboundIn(data), self.state) {
        case (.head(let head), .awaitingHead):
            let route = HTTPRoute(method: head.method, uri: head.uri)
            if route.takesBody, let length = head.headers.first(name: "content-length").flatMap(Int.init), length > self.maxBody {
                // Refused before a byte of it is read.
                self.refuseTooLarge(context: context)
                return
            }
            self.state = .body(head, route, gathered: route.takesBody ? context.channel.allocator.buffer(capacity: 0) : nil)
        case (.body(var part), .body(let head, let route, var gathered)):
            guard gathered != nil else { return }
            guard gathered!.readableBytes + part.readableBytes <= self.maxBody else {
                self.refuseTooLarge(context: context)
                return
            }
            gathered!.writeBuffer(&part)
            self.state = .body(head, route, gathered: gathered)
        case (.end, .body(let head, let route, let gathered)):
            self.state = .answering
            context.triggerUserOutboundEvent(HTTPRequestProgress.received, promise: nil)
            self.answer(head, route, body: gathered.map { Array($0.readableBytesView) } ?? [], context: context)
        case (.end, .refused):
            // The whole refused request was read: the client has had its answer.
            context.close(promise: nil)
        case (.head, .refused), (.body, .refused):
            // The rest of a refused request is dropped.
            return
        case (.head, .body), (.head, .answering), (.body, .awaitingHead), (.body, .answering), (.end, .awaitingHead),
            (.end, .answering):
            // Cannot happen behind HTTPServerPipelineHandler, which hands over one whole request at a time.
            return
        }
    }

    private func answer(_ head: HTTPRequestHead, _ route: HTTPRoute, body: [UInt8], context: ChannelHandlerContext) {
        let (gateway, shuttingDown) = (self.gateway, self.shuttingDown)
        let signature = head.headers.first(name: "stripe-signature")
        let promise = context.eventLoop.makePromise(of: HTTPAnswer.self)
        promise.completeWithTask {
            await gateway.answer(route, body: body, signature: signature, shuttingDown: shuttingDown())
        }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess { answer in
            handler.value.write(answer, for: head, context: bound.value)
        }
    }

    private func write(_ answer: HTTPAnswer, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = request.isKeepAlive && !self.shuttingDown()
        var headers = HTTPHeaders([
            ("Content-Type", answer.contentType), ("Content-Length", "\(answer.body.count)"),
            ("Cache-Control", "no-store"),
        ])
        headers.add(contentsOf: answer.extraHeaders)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: answer.status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: answer.body)))), promise: nil)
        }
        self.state = .awaitingHead
        context.triggerUserOutboundEvent(HTTPRequestProgress.answered, promise: nil)
        let written = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }

    /// 413, then the connection closes once the rest of the request is read and dropped (or after
    /// `HTTPTimeoutHandler.drainAfterRefusal`): closing on unread bytes would reset the connection
    /// and the client could lose the answer.
    private func refuseTooLarge(context: ChannelHandlerContext) {
        self.state = .refused
        context.triggerUserOutboundEvent(HTTPRequestProgress.refused, promise: nil)
        let body = Array("the body is over the limit of \(self.maxBody) bytes\n".utf8)
        let headers = HTTPHeaders([
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "\(body.count)"), ("Connection", "close"),
        ])
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .payloadTooLarge, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}
