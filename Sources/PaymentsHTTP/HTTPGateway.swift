import PaymentsRPC
import PaymentsWire

#if canImport(Glibc)
import Glibc
#endif

/// Turns the endpoint's three requests into calls of the RPC dispatcher, so that they take exactly
/// the path their methods take on the Unix socket (validation, stages, metrics, the one error
/// boundary), and turns the answers into HTTP.
///
/// The calls are made as the daemon's own user. That grants nothing a caller could choose: the
/// three methods are fixed here, `HandleStripeEvent` is authenticated by the body's signature, and
/// `Metrics` and `Health` are what an operator's scraper is meant to read.
struct HTTPGateway: Sendable {
    let dispatcher: Dispatcher
    /// How long a webhook delivery may take before it is answered 503 (Stripe waits about 20 s).
    let webhookTimeoutMS: UInt32
    private let peer = PeerCredentials(pid: getpid(), uid: getuid(), gid: getgid())

    init(dispatcher: Dispatcher, webhookTimeoutMS: UInt32 = 10_000) {
        self.dispatcher = dispatcher
        self.webhookTimeoutMS = webhookTimeoutMS
    }

    func answer(_ route: HTTPRoute, body: [UInt8], signature: String?, shuttingDown: Bool) async -> HTTPAnswer {
        switch route {
        case .webhook:
            return await self.webhook(body: body, signature: signature ?? "")
        case .metrics:
            let response = await self.call(.metrics, MetricsRequest(), timeoutMS: 0)
            guard response.status.code == .ok, let reply = try? MetricsReply(serialized: response.payload) else {
                return .text(.serviceUnavailable, "metrics unavailable: \(response.status.reason)\n")
            }
            return HTTPAnswer(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: Array(reply.text.utf8))
        case .health:
            guard !shuttingDown else { return .text(.serviceUnavailable, "shutting down\n") }
            let response = await self.call(.health, HealthRequest(), timeoutMS: 0)
            guard response.status.code == .ok, let reply = try? HealthReply(serialized: response.payload) else {
                return .text(.serviceUnavailable, "not serving: \(response.status.reason)\n")
            }
            switch reply.status {
            case .serving: return .text(.ok, "serving\n")
            case .notServing, .unspecified: return .text(.serviceUnavailable, "not serving\n")
            }
        case .methodNotAllowed(let allow):
            var answer = HTTPAnswer.text(.methodNotAllowed, "method not allowed\n")
            answer.extraHeaders = [("Allow", allow)]
            return answer
        case .notFound:
            return .text(.notFound, "not found\n")
        }
    }

    /// `POST /stripe/webhook`: 200 only once the event is durable (stored, whether applied now or
    /// queued, or known already); 400 for what Stripe must not retry; 503 for what it should.
    private func webhook(body: [UInt8], signature: String) async -> HTTPAnswer {
        let delivery = StripeEvent(payload: body, signature: signature)
        let response = await self.call(.handleStripeEvent, delivery, timeoutMS: self.webhookTimeoutMS)
        let status = response.status
        switch status.code {
        case .ok:
            guard let result = try? EventResult(serialized: response.payload) else {
                return .json(.serviceUnavailable, ["error": "internal", "message": "the answer could not be read"])
            }
            return .json(.ok, ["event_id": result.eventID, "type": result.type, "outcome": result.outcome.name])
        case .invalidArgument, .unauthenticated:
            // A bad signature, a timestamp outside tolerance, a body that is not an event: resending
            // the same bytes cannot succeed.
            return .json(.badRequest, ["error": status.reason, "message": status.message])
        case .cancelled, .unknown, .deadlineExceeded, .notFound, .alreadyExists, .permissionDenied,
            .resourceExhausted, .failedPrecondition, .aborted, .outOfRange, .unimplemented, .internal, .unavailable,
            .dataLoss:
            // Not stored: Stripe retries, and the event is applied when a retry gets through.
            var answer = HTTPAnswer.json(.serviceUnavailable, ["error": status.reason, "message": status.message])
            answer.extraHeaders = [("Retry-After", "5")]
            return answer
        }
    }

    private func call(_ method: MethodName, _ request: some WireMessage, timeoutMS: UInt32) async -> ResponseEnvelope {
        await self.dispatcher.dispatch(
            RequestEnvelope(requestID: 1, method: method.fullName, payload: request.serialized(), timeoutMS: timeoutMS),
            peer: self.peer)
    }
}
