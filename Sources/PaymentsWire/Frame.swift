/// The framing of the wire protocol (protocol.md section 1).
///
/// ```
/// +--------+--------+--------+--------+----------------------+
/// |   length L, unsigned 32-bit, big-endian  |  L bytes of protobuf |
/// +--------+--------+--------+--------+----------------------+
/// ```
/// `1 <= L <= maxFrame`. Client frames hold a `Request`, server frames a `Response`.
public enum Frame {
    /// Bytes of the length prefix.
    public static let headerSize = 4
    /// The largest frame body accepted unless configured otherwise (1 MiB).
    public static let defaultMaxFrame = 1 << 20

    /// The body prefixed with its length.
    public static func encode(_ body: [UInt8]) -> [UInt8] {
        var frame = [UInt8]()
        frame.reserveCapacity(Self.headerSize + body.count)
        Self.appendHeader(length: body.count, to: &frame)
        frame.append(contentsOf: body)
        return frame
    }

    public static func appendHeader(length: Int, to bytes: inout [UInt8]) {
        let value = UInt32(length)
        bytes.append(UInt8(truncatingIfNeeded: value >> 24))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    /// The length announced by a 4-byte header.
    public static func length<Bytes: Collection<UInt8>>(header: Bytes) -> Int {
        precondition(header.count == Self.headerSize, "a frame header has \(Self.headerSize) bytes")
        return header.reduce(0) { ($0 << 8) | Int($1) }
    }
}
