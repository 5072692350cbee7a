import PaymentsProtoC

/// `payments.v1.MetricsRequest` (no fields).
public struct MetricsRequest: WireMessage, Equatable {
    public init() {}

    public init(serialized bytes: [UInt8]) throws {
        try withUnpacked(
            bytes, descriptor: payments__v1__metrics_request__descriptor, unpack: { payments__v1__metrics_request__unpack(nil, $0, $1) },
            free: { payments__v1__metrics_request__free_unpacked($0, nil) }
        ) { _ in }
    }

    public func serialized() -> [UInt8] { [] }
}

/// `payments.v1.MetricsReply`: Prometheus text exposition.
public struct MetricsReply: WireMessage, Equatable {
    public var text: String

    public init(text: String) { self.text = text }

    public init(serialized bytes: [UInt8]) throws {
        self = try withUnpacked(
            bytes, descriptor: payments__v1__metrics_reply__descriptor, unpack: { payments__v1__metrics_reply__unpack(nil, $0, $1) },
            free: { payments__v1__metrics_reply__free_unpacked($0, nil) }
        ) { c in MetricsReply(text: swiftString(c.text)) }
    }

    public func serialized() -> [UInt8] {
        let arena = CArena()
        var c = Payments__V1__MetricsReply()
        payments__v1__metrics_reply__init(&c)
        c.text = arena.cString(self.text)
        return withExtendedLifetime(arena) {
            packToArray(size: payments__v1__metrics_reply__get_packed_size(&c)) {
                payments__v1__metrics_reply__pack(&c, $0)
            }
        }
    }
}
