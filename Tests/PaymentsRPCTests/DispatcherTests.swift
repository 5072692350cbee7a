import Logging
import PaymentsRPC
import PaymentsTesting
import PaymentsWire
import Testing

@Suite struct DispatcherTests {
    static let root = PeerCredentials(pid: 1, uid: 0, gid: 0)
    static let member = PeerCredentials(pid: 2, uid: 1000, gid: 100)
    /// In the allowed group and the admin group.
    static let admin = PeerCredentials(pid: 3, uid: 1001, gid: 200)
    /// In an admin group only: not an allowed caller at all.
    static let adminOnly = PeerCredentials(pid: 6, uid: 1003, gid: 201)
    static let stranger = PeerCredentials(pid: 4, uid: 1002, gid: 300)

    struct Declined: RPCErrorConvertible {
        var rpcError: RPCError { RPCError(.failedPrecondition, "payment_not_paid", "not paid", details: [Header("payment_id", "p1")]) }
    }
    struct SecretBug: Error, CustomStringConvertible { var description: String { "sk_live_SECRET leaked in a bug" } }

    private func dispatcher(
        testDelay: Duration? = nil, _ health: @escaping @Sendable (HealthRequest, CallContext) async throws -> HealthReply
    ) -> Dispatcher {
        var table = MethodTable()
        table.register(.health, HealthRequest.self, health)
        var configuration = Dispatcher.Configuration()
        configuration.testDelay = testDelay
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return Dispatcher(
            table: table,
            policy: CallerPolicy(
                daemonUID: 999, allowedGroups: [100], adminGroups: [200, 201],
                groupsOf: { $0.gid == 200 ? [100, 200] : [$0.gid] }),
            metrics: RequestMetrics(), configuration: configuration, logger: logger)
    }

    private func ok() -> Dispatcher {
        self.dispatcher { _, _ in HealthReply(status: .serving, version: "t", uptimeSeconds: 0, pendingOperations: 0) }
    }

    private func call(
        _ dispatcher: Dispatcher, _ method: String, payload: [UInt8] = [], peer: PeerCredentials = root,
        timeoutMS: UInt32 = 0, key: String = ""
    ) async -> ResponseEnvelope {
        await dispatcher.dispatch(
            RequestEnvelope(requestID: 9, method: method, payload: payload, timeoutMS: timeoutMS, idempotencyKey: key),
            peer: peer)
    }

    @Test func servedMethod_answersOK_withItsPayload() async throws {
        let response = await self.call(self.ok(), MethodName.health.fullName)
        #expect(response.requestID == 9)
        #expect(response.status == .ok)
        #expect(try HealthReply(serialized: response.payload).status == .serving)
    }

    @Test func unknownMethod_andUnbuiltMethod_areUnimplemented_withDistinctReasons() async {
        let unknown = await self.call(self.ok(), "payments.v1.Payments/Teleport")
        #expect(unknown.status.code == .unimplemented && unknown.status.reason == "unknown_method")
        let empty = await self.call(self.ok(), "")
        #expect(empty.status.reason == "unknown_method")
        let unbuilt = await self.call(self.ok(), MethodName.getPayment.fullName)
        #expect(unbuilt.status.code == .unimplemented && unbuilt.status.reason == "not_implemented")
    }

    @Test func undecodablePayload_isMalformedPayload() async {
        let response = await self.call(self.ok(), MethodName.health.fullName, payload: [0xFF, 0xFF, 0xFF])
        #expect(response.status.code == .invalidArgument && response.status.reason == "malformed_payload")
    }

    @Test func callers_areAuthorisedBySection6() async {
        let dispatcher = self.ok()
        #expect(await self.call(dispatcher, MethodName.health.fullName, peer: Self.member).status == .ok)
        #expect(await self.call(dispatcher, MethodName.health.fullName, peer: Self.admin).status == .ok)
        #expect(await self.call(dispatcher, MethodName.health.fullName, peer: PeerCredentials(pid: 5, uid: 999, gid: 999)).status == .ok)
        let stranger = await self.call(dispatcher, MethodName.health.fullName, peer: Self.stranger)
        #expect(stranger.status.code == .permissionDenied && stranger.status.reason == "caller_not_allowed")
        // Strangers learn nothing, not even which methods exist.
        #expect(await self.call(dispatcher, "payments.v1.Payments/Teleport", peer: Self.stranger).status.reason == "caller_not_allowed")
        // Admin methods: members are refused before the method's (missing) handler is looked up.
        #expect(await self.call(dispatcher, MethodName.reconcile.fullName, peer: Self.member).status.reason == "caller_not_allowed")
        #expect(await self.call(dispatcher, MethodName.reconcile.fullName, peer: Self.admin).status.reason == "not_implemented")
        // An admin group grants admin methods to allowed callers only (section 6: "additionally").
        #expect(await self.call(dispatcher, MethodName.health.fullName, peer: Self.adminOnly).status.reason == "caller_not_allowed")
        #expect(await self.call(dispatcher, MethodName.reconcile.fullName, peer: Self.adminOnly).status.reason == "caller_not_allowed")
        #expect(
            await self.call(dispatcher, MethodName.refundPayment.fullName, peer: Self.root, key: "k").status.reason
                == "not_implemented")
        // A refund without a key is refused before anything else about it is looked at.
        #expect(
            await self.call(dispatcher, MethodName.refundPayment.fullName, peer: Self.root).status.reason
                == "idempotency_key_required")
    }

    /// Records the stages it passes through; `answer` answers without calling the handler.
    struct Stage: ServerInterceptor {
        let name: String
        let trail: Shared<[String]>
        var answer: [UInt8]? = nil

        func intercept(
            payload: [UInt8], context: CallContext, next: @Sendable (CallContext) async throws -> [UInt8]
        ) async throws -> [UInt8] {
            self.trail.withLock { $0.append(self.name) }
            if let answer { return answer }
            return try await next(context.admitted(as: IdempotentCall(callerUID: 7, key: self.name, requestHash: [])))
        }
    }

    @Test func stagesRunInOrder_aroundTheHandler_andMayAnswerThemselves() async throws {
        let trail = Shared<[String]>([])
        var table = MethodTable()
        table.register(.health, HealthRequest.self) { _, context in
            trail.withLock { $0.append("handler saw \(context.idempotentCall?.key ?? "nothing")") }
            return HealthReply(status: .serving, version: "t", uptimeSeconds: 0, pendingOperations: 0)
        }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let policy = CallerPolicy(daemonUID: 999, allowedGroups: [], adminGroups: [], groupsOf: { [$0.gid] })
        let through = Dispatcher(
            table: table, interceptors: [Stage(name: "first", trail: trail), Stage(name: "second", trail: trail)],
            policy: policy, metrics: RequestMetrics(), logger: logger)
        #expect(await self.call(through, MethodName.health.fullName).status == .ok)
        #expect(trail.value == ["first", "second", "handler saw second"])

        trail.withLock { $0 = [] }
        let stored = HealthReply(status: .notServing, version: "stored", uptimeSeconds: 0, pendingOperations: 0)
        let answering = Dispatcher(
            table: table, interceptors: [Stage(name: "store", trail: trail, answer: stored.serialized())],
            policy: policy, metrics: RequestMetrics(), logger: logger)
        let response = await self.call(answering, MethodName.health.fullName)
        #expect(try HealthReply(serialized: response.payload).version == "stored")
        #expect(trail.value == ["store"], "the handler did not run")

        // A payload that does not decode is refused before any stage sees it.
        trail.withLock { $0 = [] }
        let malformed = await self.call(through, MethodName.health.fullName, payload: [0xFF, 0xFF])
        #expect(malformed.status.reason == "malformed_payload")
        #expect(trail.value.isEmpty)
    }

    @Test func idempotencyKey_outOfDomain_isInvalidField() async {
        for key in [String(repeating: "a", count: 256), "line\nbreak", "naïve"] {
            let response = await self.call(self.ok(), MethodName.health.fullName, key: key)
            #expect(response.status.reason == "invalid_field")
            #expect(response.status.detail("field") == "idempotency_key")
        }
        #expect(await self.call(self.ok(), MethodName.health.fullName, key: String(repeating: "k", count: 255)).status == .ok)
    }

    @Test func domainErrors_keepTheirStatus_unexpectedOnesBecomeGenericInternal() async {
        let declined = self.dispatcher { _, _ in throw Declined() }
        let response = await self.call(declined, MethodName.health.fullName)
        #expect(response.status == Declined().rpcError.status)

        let buggy = self.dispatcher { _, _ in throw SecretBug() }
        let failure = await self.call(buggy, MethodName.health.fullName)
        #expect(failure.status.code == .internal && failure.status.reason == "internal")
        #expect(!failure.status.message.contains("SECRET"))
        #expect(failure.status.details.isEmpty)
    }

    @Test func deadline_endsTheCall_withDeadlineExceeded() async {
        let slow = self.dispatcher(testDelay: .seconds(5)) { _, _ in
            HealthReply(status: .serving, version: "t", uptimeSeconds: 0, pendingOperations: 0)
        }
        let started = ContinuousClock.now
        let response = await self.call(slow, MethodName.health.fullName, timeoutMS: 50)
        #expect(response.status.code == .deadlineExceeded && response.status.reason == "deadline_exceeded")
        #expect(ContinuousClock.now - started < .seconds(2))
    }

    @Test func handlersSeeTheDeadlineAndKey() async {
        let seen = self.dispatcher { _, context in
            #expect(context.idempotencyKey == "k1")
            #expect(context.deadline - .now <= .milliseconds(1500))
            #expect(context.deadline - .now > .zero)
            return HealthReply(status: .serving, version: "t", uptimeSeconds: 0, pendingOperations: 0)
        }
        #expect(await self.call(seen, MethodName.health.fullName, timeoutMS: 1500, key: "k1").status == .ok)
    }

    @Test func metrics_countByMethodAndCode() async {
        let metrics = RequestMetrics()
        var table = MethodTable()
        table.register(.health, HealthRequest.self) { _, _ in
            HealthReply(status: .serving, version: "t", uptimeSeconds: 0, pendingOperations: 0)
        }
        let dispatcher = Dispatcher(
            table: table, policy: CallerPolicy(allowedGroups: [], adminGroups: []), metrics: metrics,
            logger: Logger(label: "test"))
        for _ in 0..<3 { _ = await self.call(dispatcher, MethodName.health.fullName) }
        _ = await self.call(dispatcher, "junk-\(UInt64.random(in: 0...UInt64.max))")
        #expect(metrics.count(method: .health, code: .ok) == 3)
        #expect(metrics.count(method: nil, code: .unimplemented) == 1)
        let text = metrics.exposition()
        #expect(text.contains("paymentsd_requests_total{method=\"Health\",code=\"OK\"} 3"))
        #expect(text.contains("paymentsd_request_duration_seconds_count{method=\"Health\"} 3"))
        #expect(!text.contains("junk-"))
    }
}
