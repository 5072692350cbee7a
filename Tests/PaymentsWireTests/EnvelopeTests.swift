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

@Suite struct FrameTests {
    @Test func header_isBigEndianLength() {
        let frame = Frame.encode([UInt8](repeating: 7, count: 258))
        #expect(Array(frame.prefix(4)) == [0, 0, 1, 2])
        #expect(Frame.length(header: frame.prefix(4)) == 258)
        #expect(frame.count == 262)
    }
}

@Suite struct NULInStringsTests {
    @Test func aStringWithNUL_isRefused_notTruncated() {
        // protobuf-c would hand "Health\0junk" over as "Health".
        let request = RequestEnvelope(requestID: 1, method: "payments.v1.Payments/Health")
        var bytes = request.serialized()
        let method = Array("payments.v1.Payments/Health".utf8)
        let start = bytes.firstIndex(of: method[0])!
        bytes.replaceSubrange((start + method.count - 1)..<(start + method.count), with: [0])
        #expect(throws: WireError.undecodable) { try RequestEnvelope(serialized: bytes) }
    }

    @Test func aNULInANestedString_isRefused() {
        let response = ResponseEnvelope(
            requestID: 1, status: Status(code: .notFound, reason: "deal_not_found", details: [Header("k", "vX")]))
        var bytes = response.serialized()
        bytes[bytes.lastIndex(of: UInt8(ascii: "X"))!] = 0
        #expect(throws: WireError.undecodable) { try ResponseEnvelope(serialized: bytes) }
    }

    @Test func bytesFields_mayHoldNUL() throws {
        let request = RequestEnvelope(requestID: 1, method: "m", payload: [0, 0, 0])
        #expect(try RequestEnvelope(serialized: request.serialized()).payload == [0, 0, 0])
    }
}
