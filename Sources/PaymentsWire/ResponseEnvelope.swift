import PaymentsProtoC

/// `payments.v1.Response`: the answer to one request.
public struct ResponseEnvelope: WireMessage, Equatable {
    public var requestID: UInt64
    public var status: Status
    /// The method's response message when `status.code == .ok`, else empty.
    public var payload: [UInt8]

    public init(requestID: UInt64, status: Status, payload: [UInt8] = []) {
        self.requestID = requestID
        self.status = status
        self.payload = payload
    }

    public init(serialized bytes: [UInt8]) throws {
        self = try withUnpacked(
            bytes, descriptor: payments__v1__response__descriptor, unpack: { payments__v1__response__unpack(nil, $0, $1) },
            free: { payments__v1__response__free_unpacked($0, nil) }
        ) { c in
            ResponseEnvelope(
                requestID: c.request_id, status: c.status.map { Status($0.pointee) } ?? .ok,
                payload: swiftBytes(c.payload))
        }
    }

    public func serialized() -> [UInt8] {
        let arena = CArena()
        var c = Payments__V1__Response()
        payments__v1__response__init(&c)
        c.request_id = self.requestID
        c.status = self.status.cStatus(in: arena)
        c.payload = binaryData(arena.bytes(self.payload))
        return withExtendedLifetime(arena) {
            packToArray(size: payments__v1__response__get_packed_size(&c)) { payments__v1__response__pack(&c, $0) }
        }
    }
}
