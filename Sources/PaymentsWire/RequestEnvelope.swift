import PaymentsProtoC

/// `payments.v1.Request`: one call from a client.
public struct RequestEnvelope: WireMessage, Equatable {
    /// Echoed in the response; 0 is reserved for connection-level errors.
    public var requestID: UInt64
    /// "payments.v1.Payments/<Name>".
    public var method: String
    /// The method's request message, encoded.
    public var payload: [UInt8]
    /// The call's deadline in milliseconds; 0 means the server's default.
    public var timeoutMS: UInt32
    /// Empty when the caller sent none.
    public var idempotencyKey: String
    public var headers: [Header]

    public init(
        requestID: UInt64, method: String, payload: [UInt8] = [], timeoutMS: UInt32 = 0,
        idempotencyKey: String = "", headers: [Header] = []
    ) {
        self.requestID = requestID
        self.method = method
        self.payload = payload
        self.timeoutMS = timeoutMS
        self.idempotencyKey = idempotencyKey
        self.headers = headers
    }

    public init(serialized bytes: [UInt8]) throws {
        self = try withUnpacked(
            bytes, descriptor: payments__v1__request__descriptor, unpack: { payments__v1__request__unpack(nil, $0, $1) },
            free: { payments__v1__request__free_unpacked($0, nil) }
        ) { c in
            RequestEnvelope(
                requestID: c.request_id, method: swiftString(c.method), payload: swiftBytes(c.payload),
                timeoutMS: c.timeout_ms, idempotencyKey: swiftString(c.idempotency_key),
                headers: repeated(c.n_headers, c.headers, Header.init))
        }
    }

    public func serialized() -> [UInt8] {
        let arena = CArena()
        var c = Payments__V1__Request()
        payments__v1__request__init(&c)
        c.request_id = self.requestID
        c.method = arena.cString(self.method)
        c.payload = binaryData(arena.bytes(self.payload))
        c.timeout_ms = self.timeoutMS
        c.idempotency_key = arena.cString(self.idempotencyKey)
        c.n_headers = self.headers.count
        c.headers = Header.cArray(self.headers, in: arena)
        return withExtendedLifetime(arena) {
            packToArray(size: payments__v1__request__get_packed_size(&c)) { payments__v1__request__pack(&c, $0) }
        }
    }
}
