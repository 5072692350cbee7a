/// A protobuf message of `payments.v1` as a Swift value.
///
/// Conformers copy everything out of protobuf-c's C structs, so no C pointer
/// outlives a call. Decoding follows proto3: unknown fields are skipped,
/// absent fields take their defaults.
public protocol WireMessage: Sendable {
    /// Decodes the message; throws `WireError.undecodable` on bytes that are not one.
    init(serialized bytes: [UInt8]) throws
    /// The protobuf encoding of the message.
    func serialized() -> [UInt8]
}
