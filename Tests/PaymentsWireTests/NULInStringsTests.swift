import PaymentsWire
import Testing

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
