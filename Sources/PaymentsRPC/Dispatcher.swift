import Logging
import PaymentsWire

/// Turns one request into one response: authorisation, envelope checks,
/// method lookup, deadline, and the one place where errors become `Status`.
public final class Dispatcher: Sendable {
    public struct Configuration: Sendable {
        /// Deadline of a call that sets `timeout_ms = 0`.
        public var defaultTimeout: Duration = .seconds(30)
        /// The longest deadline a caller may ask for.
        public var maximumTimeout: Duration = .seconds(300)
        /// Tests only: every call waits this long before its handler runs (PAYMENTSD_TEST_DELAY_MS).
        public var testDelay: Duration? = nil

        public init() {}
    }

    private let table: MethodTable
    private let interceptors: [any ServerInterceptor]
    private let policy: CallerPolicy
    private let metrics: RequestMetrics
    private let configuration: Configuration
    private let logger: Logger

    /// - Parameter interceptors: the stages every call passes through, in this order, after its payload
    ///   is decoded and validated and before its handler runs.
    public init(
        table: MethodTable, interceptors: [any ServerInterceptor] = [], policy: CallerPolicy, metrics: RequestMetrics,
        configuration: Configuration = .init(), logger: Logger
    ) {
        self.table = table
        self.interceptors = interceptors
        self.policy = policy
        self.metrics = metrics
        self.configuration = configuration
        self.logger = logger
    }

    /// Answers `request`; never throws, whatever the request holds.
    public func dispatch(_ request: RequestEnvelope, peer: PeerCredentials) async -> ResponseEnvelope {
        let start = ContinuousClock.now
        let method = MethodName(fullName: request.method)
        // The call's own logger (with its request id and method) is built only where something is logged.
        let callLogger = { CallContext.logger(self.logger, method: method?.rawValue ?? "unknown", requestID: request.requestID) }

        let response: ResponseEnvelope
        do {
            let payload = try await self.call(request, method: method, peer: peer, start: start)
            response = ResponseEnvelope(requestID: request.requestID, status: .ok, payload: payload)
        } catch {
            response = ResponseEnvelope(requestID: request.requestID, status: Self.status(for: error, logger: callLogger()))
        }
        let elapsed = ContinuousClock.now - start
        self.metrics.record(method: method, code: response.status.code, duration: elapsed)
        if self.logger.logLevel <= .debug {
            callLogger().debug(
                "call answered",
                metadata: ["code": "\(response.status.code)", "reason": "\(response.status.reason)", "peer": "\(peer)"])
        }
        return response
    }

    private func call(
        _ request: RequestEnvelope, method: MethodName?, peer: PeerCredentials, start: ContinuousClock.Instant
    ) async throws -> [UInt8] {
        guard self.policy.permits(peer, method: nil) else { throw RPCError.callerNotAllowed }
        guard let method else {
            throw RPCError(
                .unimplemented, "unknown_method",
                "no method named \"\(request.method.prefix(200))\" in service payments.v1.Payments")
        }
        guard self.policy.permits(peer, method: method) else { throw RPCError.callerNotAllowed }
        try Self.validateIdempotencyKey(request.idempotencyKey)
        if method.requiresIdempotencyKey && request.idempotencyKey.isEmpty {
            throw RPCError(
                .invalidArgument, "idempotency_key_required",
                "\(method.rawValue) needs an idempotency key, so that a retry cannot do it twice")
        }
        guard let handler = self.table.handler(for: method) else {
            throw RPCError(.unimplemented, "not_implemented", "\(method.rawValue) is not served by this version")
        }
        let invocation = try handler(request.payload)
        let timeout =
            request.timeoutMS == 0
            ? self.configuration.defaultTimeout
            : min(.milliseconds(Int64(request.timeoutMS)), self.configuration.maximumTimeout)
        let deadline = start + timeout
        let context = CallContext(
            method: method, requestID: request.requestID, peer: peer, deadline: deadline,
            idempotencyKey: request.idempotencyKey.isEmpty ? nil : request.idempotencyKey, logger: self.logger)
        if let testDelay = self.configuration.testDelay {
            try await Task.sleep(until: min(start + testDelay, deadline), clock: .continuous)
        }
        // No timer races the handler: it gets the deadline, and every wait it makes (a lock, a Stripe
        // call) ends by then with the handler's own reason (`lock_timeout`, `stripe_unavailable`). A
        // call whose deadline passed before its handler could start is not run at all.
        guard ContinuousClock.now < deadline else { throw RPCError.deadlineExceeded }
        return try await Self.run(self.interceptors[...], request.payload, context, invocation)
    }

    /// The stages in order, then the handler.
    private static func run(
        _ stages: ArraySlice<any ServerInterceptor>, _ payload: [UInt8], _ context: CallContext,
        _ invocation: @escaping MethodTable.Invocation
    ) async throws -> [UInt8] {
        guard let stage = stages.first else { return try await invocation(context) }
        let rest = stages.dropFirst()
        return try await stage.intercept(payload: payload, context: context) { context in
            try await Self.run(rest, payload, context, invocation)
        }
    }

    /// An idempotency key is 1-255 printable ASCII characters (protocol.md section 5); empty means none.
    static func validateIdempotencyKey(_ key: String) throws {
        guard !key.isEmpty else { return }
        let bytes = Array(key.utf8)
        guard bytes.count <= 255, bytes.allSatisfy({ (0x20...0x7E).contains($0) }) else {
            throw RPCError.invalidField("idempotency_key", "idempotency_key must be 1-255 printable ASCII characters")
        }
    }

    /// The error boundary: protocol errors and domain errors keep their status;
    /// anything else is a bug, logged here and answered with a generic INTERNAL.
    static func status(for error: any Error, logger: Logger) -> Status {
        switch error {
        case let error as RPCError:
            return error.status
        case let error as any RPCErrorConvertible:
            return error.rpcError.status
        case is CancellationError:
            return Status(code: .cancelled, reason: "cancelled", message: "the call was cancelled")
        default:
            logger.error("unexpected error", metadata: ["error": "\(String(reflecting: error))"])
            return Status(code: .internal, reason: "internal", message: "internal error; the daemon's log has details")
        }
    }
}
