import Foundation
import Synchronization

/// Calls Stripe's REST API: form-encoded requests, JSON answers, idempotency
/// keys, retries with backoff, and a circuit breaker.
///
/// Retries happen only where resending cannot do harm and may help: network
/// errors, 409 (the key's first request is still running), 429 and 5xx, and
/// never when Stripe says `Stripe-Should-Retry: false`. Every POST carries the
/// caller's `Idempotency-Key`, the same on every attempt, so a request that
/// was applied before its answer got lost is answered from Stripe's memory.
public final class StripeClient: Sendable {
    public struct Configuration: Sendable {
        public var baseURL: String
        public var secretKey: String
        public var connectTimeout: Duration = .seconds(3)
        public var requestTimeout: Duration = .seconds(20)
        /// Attempts per call, the first included.
        public var maxAttempts = 3
        public var backoffBase: Duration = .milliseconds(100)
        public var breakerThreshold = 5
        public var breakerCoolDown: Duration = .seconds(5)
        /// Calls to Stripe in flight at most; each holds one reused connection (and one blocked
        /// thread). More wait for a free one.
        public var maxCallsInFlight = 16
        /// A PEM file of the certificate authorities Stripe's certificate must chain to, instead
        /// of the system's (`STRIPE_CA_FILE`; for a local TLS terminator in tests and the bench).
        public var caFile: String? = nil

        public init(baseURL: String, secretKey: String) {
            self.baseURL = baseURL
            self.secretKey = secretKey
        }
    }

    private let configuration: Configuration
    private let transport: CurlTransport
    private let breaker: Mutex<CircuitBreaker>

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.transport = CurlTransport(maxCallsInFlight: configuration.maxCallsInFlight, caFile: configuration.caFile)
        self.breaker = Mutex(
            CircuitBreaker(failureThreshold: configuration.breakerThreshold, coolDown: configuration.breakerCoolDown))
    }

    /// Connections opened to Stripe since start-up; calls reuse open ones.
    public var connectionsOpened: Int { self.transport.connectionsOpened }

    /// `POST /v1/checkout/sessions`.
    public func createCheckoutSession(
        _ request: CheckoutSessionRequest, idempotencyKey: String, deadline: ContinuousClock.Instant
    ) async throws -> CheckoutSession {
        try await self.call(
            "POST", "/v1/checkout/sessions", request.form, idempotencyKey: idempotencyKey, deadline: deadline)
    }

    /// `GET /v1/checkout/sessions/{id}`.
    public func retrieveCheckoutSession(_ id: String, deadline: ContinuousClock.Instant) async throws
        -> CheckoutSession
    {
        try await self.call("GET", "/v1/checkout/sessions/\(Self.pathComponent(id))", FormParameters(), deadline: deadline)
    }

    /// `POST /v1/checkout/sessions/{id}/expire`.
    public func expireCheckoutSession(
        _ id: String, idempotencyKey: String, deadline: ContinuousClock.Instant
    ) async throws -> CheckoutSession {
        try await self.call(
            "POST", "/v1/checkout/sessions/\(Self.pathComponent(id))/expire", FormParameters(),
            idempotencyKey: idempotencyKey, deadline: deadline)
    }

    /// `POST /v1/refunds`.
    public func createRefund(
        _ request: RefundRequest, idempotencyKey: String, deadline: ContinuousClock.Instant
    ) async throws -> RefundObject {
        try await self.call("POST", "/v1/refunds", request.form, idempotencyKey: idempotencyKey, deadline: deadline)
    }

    /// `GET /v1/refunds/{id}`.
    public func retrieveRefund(_ id: String, deadline: ContinuousClock.Instant) async throws -> RefundObject {
        try await self.call("GET", "/v1/refunds/\(Self.pathComponent(id))", FormParameters(), deadline: deadline)
    }

    /// `GET /v1/refunds?payment_intent=`: the payment's refunds, newest first, every page.
    public func listRefunds(paymentIntent: String, deadline: ContinuousClock.Instant) async throws -> [RefundObject] {
        var refunds: [RefundObject] = []
        while true {
            var query = FormParameters()
            query.add("payment_intent", paymentIntent)
            query.add("limit", "100")
            if let last = refunds.last { query.add("starting_after", last.id) }
            let page: ListPage<RefundObject> = try await self.call("GET", "/v1/refunds", query, deadline: deadline)
            refunds += page.data
            if page.has_more != true || page.data.isEmpty { return refunds }
        }
    }

    /// `GET /v1/events`: one page, newest first, with Stripe's `has_more`. `Event` is the caller's
    /// decoding of an event (the engine keeps only the fields it acts on).
    public func listEvents<Event: Decodable & Sendable>(
        _ query: EventListQuery, as: Event.Type, deadline: ContinuousClock.Instant
    ) async throws -> (events: [Event], hasMore: Bool) {
        let page: ListPage<Event> = try await self.call("GET", "/v1/events", query.parameters, deadline: deadline)
        return (page.data, page.has_more ?? false)
    }

    private func call<Object: Decodable>(
        _ method: String, _ path: String, _ parameters: FormParameters, idempotencyKey: String? = nil,
        deadline: ContinuousClock.Instant
    ) async throws -> Object {
        guard self.breaker.withLock({ $0.allowCall(now: .now) }) else {
            throw StripeError.unavailable(reason: "circuit open after repeated failures; cooling down")
        }
        do {
            let response = try await self.send(method, path, parameters, idempotencyKey: idempotencyKey, deadline: deadline)
            self.breaker.withLock { $0.recordSuccess() }
            return try Self.decode(response)
        } catch let error as StripeError {
            switch error {
            case .rejected: self.breaker.withLock { $0.recordSuccess() }
            case .unavailable: self.breaker.withLock { $0.recordFailure(now: .now) }
            }
            throw error
        }
    }

    /// Sends with retries; returns a 2xx response or throws `StripeError`.
    private func send(
        _ method: String, _ path: String, _ parameters: FormParameters, idempotencyKey: String?,
        deadline: ContinuousClock.Instant
    ) async throws -> HTTPResponse {
        var headers = ["Authorization: Bearer \(self.configuration.secretKey)", "Stripe-Version: 2026-10-28.endive"]
        if let idempotencyKey { headers.append("Idempotency-Key: \(idempotencyKey)") }
        var url = self.configuration.baseURL + path
        var body: [UInt8]? = nil
        if method == "POST" {
            headers.append("Content-Type: application/x-www-form-urlencoded")
            body = parameters.encoded()
        } else if !parameters.pairs.isEmpty {
            url += "?" + parameters.queryString
        }

        var lastProblem = "no attempt made before the deadline"
        for attempt in 1...self.configuration.maxAttempts {
            let remaining = deadline - .now
            guard remaining > .milliseconds(10) else { break }
            do {
                let response = try await self.transport.perform(
                    method: method, url: url, headers: headers, body: body,
                    connectTimeoutMS: Self.milliseconds(min(self.configuration.connectTimeout, remaining)),
                    timeoutMS: Self.milliseconds(min(self.configuration.requestTimeout, remaining)))
                if (200..<300).contains(response.status) { return response }
                let shouldRetry = response.headers["stripe-should-retry"]
                let retryable = response.status == 409 || response.status == 429 || response.status >= 500
                if shouldRetry == "false" || (!retryable && shouldRetry != "true") {
                    throw Self.rejection(response)
                }
                lastProblem = "HTTP \(response.status)"
            } catch let error as NetworkError {
                lastProblem = error.description
            }
            if attempt < self.configuration.maxAttempts {
                try await Task.sleep(for: self.backoff(attempt: attempt, before: deadline))
            }
        }
        throw StripeError.unavailable(reason: lastProblem)
    }

    /// Exponential backoff with full jitter, never past the deadline.
    private func backoff(attempt: Int, before deadline: ContinuousClock.Instant) -> Duration {
        let ceiling = self.configuration.backoffBase * (1 << (attempt - 1))
        let jittered = ceiling * Double.random(in: 0.5...1.0)
        return max(.zero, min(jittered, deadline - .now - .milliseconds(10)))
    }

    private static func rejection(_ response: HTTPResponse) -> StripeError {
        let detail = try? JSONDecoder().decode(StripeErrorBody.self, from: Data(response.body)).error
        if response.status >= 500 || response.status == 409 || response.status == 429 {
            return .unavailable(reason: "HTTP \(response.status), Stripe-Should-Retry: false")
        }
        return .rejected(
            status: response.status, type: detail?.type ?? "", code: detail?.code ?? "",
            message: String((detail?.message ?? "").prefix(300)))
    }

    private static func decode<Object: Decodable>(_ response: HTTPResponse) throws -> Object {
        do {
            return try JSONDecoder().decode(Object.self, from: Data(response.body))
        } catch {
            // A 2xx we cannot read: the outcome is unknown, as if the answer was lost.
            throw StripeError.unavailable(reason: "undecodable answer from Stripe (HTTP \(response.status))")
        }
    }

    private static func pathComponent(_ id: String) -> String {
        String(id.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }.map(Character.init))
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
