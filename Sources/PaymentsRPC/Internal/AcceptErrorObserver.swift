import Logging
import NIOCore
import PaymentsWire

#if canImport(Glibc)
import Glibc
#endif

/// Sits before NIO's `AcceptBackoffHandler` on the listening socket and deals with running out of
/// descriptors (EMFILE, ENFILE).
///
/// NIO's handler pauses the next accept, but the pending connection stays in the backlog, the
/// socket stays readable, and the event loop wakes for it again at once: a core spins while every
/// client hangs. So this handler keeps one spare descriptor; when an accept fails for want of
/// descriptors it frees the spare, accepts each waiting connection, answers it
/// `too_many_connections` and closes it, and takes the spare again (the way libev and nginx do).
/// The backlog is then empty and the loop sleeps until a new client comes. Every failed accept is
/// counted; an episode is logged once, at its start.
final class AcceptErrorObserver: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let listening: Int32
    private let logger: Logger
    private let metrics: RequestMetrics
    private var spare: Int32
    private var inEpisode = false
    private static let refusal = Frame.connectionError(
        Status(
            code: .resourceExhausted, reason: "too_many_connections",
            message: "the daemon is out of file descriptors; retry later"))

    init(listening: Int32, logger: Logger, metrics: RequestMetrics) {
        self.listening = listening
        self.logger = logger
        self.metrics = metrics
        self.spare = Self.openSpare()
    }

    deinit {
        if self.spare >= 0 { close(self.spare) }
    }

    private static func openSpare() -> Int32 { open("/dev/null", O_RDONLY | O_CLOEXEC) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.inEpisode {
            self.inEpisode = false
            self.logger.notice("accepting connections again")
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.metrics.acceptError()
        if !self.inEpisode {
            self.inEpisode = true
            self.logger.error(
                "accepting connections failed; connections are refused until it works again",
                metadata: ["error": "\(error)"])
        }
        if let code = (error as? IOError)?.errnoCode, code == EMFILE || code == ENFILE {
            self.shedWaitingConnections()
        }
        context.fireErrorCaught(error)
    }

    private func shedWaitingConnections() {
        if self.spare >= 0 {
            close(self.spare)
            self.spare = -1
        }
        while true {
            // The listening socket is non-blocking: this ends with EAGAIN once the backlog is empty.
            let client = accept(self.listening, nil, nil)
            guard client >= 0 else { break }
            // A fresh socket's buffer takes this small answer whole; if not, the client gets EOF.
            _ = Self.refusal.withUnsafeBytes {
                send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            close(client)
            self.metrics.connectionRefused()
        }
        self.spare = Self.openSpare()
    }
}
