import PaymentsProtoC

/// `payments.v1.ReconcileRequest` (no fields).
public struct ReconcileRequest: WireMessage, Equatable {
    public init() {}

    public init(serialized bytes: [UInt8]) throws {
        try withUnpacked(
            bytes, descriptor: payments__v1__reconcile_request__descriptor,
            unpack: { payments__v1__reconcile_request__unpack(nil, $0, $1) },
            free: { payments__v1__reconcile_request__free_unpacked($0, nil) }
        ) { _ in }
    }

    public func serialized() -> [UInt8] { [] }
}
