import PaymentsProtoC

/// `payments.v1.HealthRequest` (no fields).
public struct HealthRequest: WireMessage, Equatable {
    public init() {}

    public init(serialized bytes: [UInt8]) throws {
        try withUnpacked(
            bytes, descriptor: payments__v1__health_request__descriptor, unpack: { payments__v1__health_request__unpack(nil, $0, $1) },
            free: { payments__v1__health_request__free_unpacked($0, nil) }
        ) { _ in }
    }

    public func serialized() -> [UInt8] { [] }
}

/// `payments.v1.ServingStatus`.
public enum ServingStatus: Int, Sendable {
    case unspecified = 0
    case serving = 1
    case notServing = 2
}

/// `payments.v1.HealthReply`.
public struct HealthReply: WireMessage, Equatable {
    public var status: ServingStatus
    public var version: String
    public var uptimeSeconds: UInt64
    /// Operations started and not yet finished (resumed by the janitor).
    public var pendingOperations: UInt64

    public init(status: ServingStatus, version: String, uptimeSeconds: UInt64, pendingOperations: UInt64) {
        self.status = status
        self.version = version
        self.uptimeSeconds = uptimeSeconds
        self.pendingOperations = pendingOperations
    }

    public init(serialized bytes: [UInt8]) throws {
        self = try withUnpacked(
            bytes, descriptor: payments__v1__health_reply__descriptor, unpack: { payments__v1__health_reply__unpack(nil, $0, $1) },
            free: { payments__v1__health_reply__free_unpacked($0, nil) }
        ) { c in
            HealthReply(
                status: ServingStatus(rawValue: Int(c.status.rawValue)) ?? .unspecified,
                version: swiftString(c.version), uptimeSeconds: c.uptime_s, pendingOperations: c.pending_operations)
        }
    }

    public func serialized() -> [UInt8] {
        let arena = CArena()
        var c = Payments__V1__HealthReply()
        payments__v1__health_reply__init(&c)
        c.status = Payments__V1__ServingStatus(rawValue: UInt32(self.status.rawValue))
        c.version = arena.cString(self.version)
        c.uptime_s = self.uptimeSeconds
        c.pending_operations = self.pendingOperations
        return withExtendedLifetime(arena) {
            packToArray(size: payments__v1__health_reply__get_packed_size(&c)) {
                payments__v1__health_reply__pack(&c, $0)
            }
        }
    }
}
