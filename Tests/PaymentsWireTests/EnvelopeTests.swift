import PaymentsWire
import Testing

@Suite struct EnvelopeTests {
    @Test func request_roundTrips_withEveryField() throws {
        let request = RequestEnvelope(
            requestID: .max, method: "payments.v1.Payments/Health", payload: [0, 1, 2, 0, 255],
            timeoutMS: 1500, idempotencyKey: "key-1", headers: [Header("trace", "ä€"), Header("", "")])
        #expect(try RequestEnvelope(serialized: request.serialized()) == request)
    }

    @Test func response_roundTrips_withStatusDetails() throws {
        let response = ResponseEnvelope(
            requestID: 7,
            status: Status(
                code: .failedPrecondition, reason: "insufficient_stock", message: "no stock",
                details: [Header("sku", "tee-red-m")]),
            payload: [])
        let decoded = try ResponseEnvelope(serialized: response.serialized())
        #expect(decoded == response)
        #expect(decoded.status.detail("sku") == "tee-red-m")
    }

    @Test func allDefaultMessage_packsToNoBytes_andDecodesBack() throws {
        #expect(HealthRequest().serialized().isEmpty)
        let request = try RequestEnvelope(serialized: [])
        #expect(request == RequestEnvelope(requestID: 0, method: ""))
    }

    @Test func garbage_isUndecodable_notACrash() {
        #expect(throws: WireError.undecodable) { try RequestEnvelope(serialized: [0xFF, 0xFF, 0xFF]) }
        #expect(throws: WireError.undecodable) { try HealthRequest(serialized: [0x0A, 0x05, 0x01]) }
    }

    @Test func statusCodes_keepGRPCNumbers() {
        #expect(StatusCode.ok.rawValue == 0)
        #expect(StatusCode.unauthenticated.rawValue == 16)
        #expect(StatusCode.allCases.count == 17)
        #expect(StatusCode(wireValue: 99) == .unknown)
        #expect(StatusCode.failedPrecondition.description == "FAILED_PRECONDITION")
    }

    @Test func healthReply_roundTrips() throws {
        let reply = HealthReply(status: .serving, version: "1.2.3", uptimeSeconds: 42, pendingOperations: 3)
        #expect(try HealthReply(serialized: reply.serialized()) == reply)
    }

    @Test func methodNames_parseOnlyTheService() {
        #expect(MethodName(fullName: "payments.v1.Payments/Health") == .health)
        #expect(MethodName(fullName: "Health") == nil)
        #expect(MethodName(fullName: "payments.v1.Payments/Nope") == nil)
        #expect(MethodName.allCases.filter(\.requiresAdmin) == [.refundPayment, .setStock, .adjustStock, .releaseClaim, .reconcile])
    }
}
