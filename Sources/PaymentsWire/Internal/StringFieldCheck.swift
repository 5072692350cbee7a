import CProtobufC

/// Whether any string field of the encoded message, at any depth, holds a NUL byte.
///
/// protobuf-c hands strings over as NUL-terminated C copies, so "key\0a" and
/// "key\0b" would both arrive as "key": two idempotency keys would collapse
/// into one, and "Health\0junk" would call Health. Messages with such strings
/// are refused as undecodable instead. The walk follows the wire format and
/// the descriptor; anything it cannot parse is left for unpack to reject.
func hasNULInStringFields(_ bytes: [UInt8], descriptor: ProtobufCMessageDescriptor) -> Bool {
    withUnsafePointer(to: descriptor) { descriptor in
        bytes.withUnsafeBufferPointer { buffer in
            hasNULInStringFields(buffer[...], descriptor: descriptor, depth: 0)
        }
    }
}

private func hasNULInStringFields(
    _ bytes: Slice<UnsafeBufferPointer<UInt8>>, descriptor: UnsafePointer<ProtobufCMessageDescriptor>, depth: Int
) -> Bool {
    guard depth < 32 else { return true }  // deeper than any message of the protocol: refuse
    var index = bytes.startIndex
    func varint() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.endIndex, shift < 64 {
            let byte = bytes[index]
            index += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
    while index < bytes.endIndex {
        guard let key = varint() else { return false }
        switch key & 7 {
        case 0: guard varint() != nil else { return false }
        case 1: index += 8
        case 5: index += 4
        case 2:
            guard let length = varint(), length <= UInt64(bytes.endIndex - index) else { return false }
            let field = bytes[index..<(index + Int(length))]
            index += Int(length)
            guard key >> 3 <= UInt64(UInt32.max),
                let fieldDescriptor = protobuf_c_message_descriptor_get_field(descriptor, UInt32(key >> 3))
            else { continue }
            if paymentsd_field_is_string(fieldDescriptor) != 0, field.contains(0) { return true }
            if paymentsd_field_is_message(fieldDescriptor) != 0 {
                let nested = fieldDescriptor.pointee.descriptor.assumingMemoryBound(
                    to: ProtobufCMessageDescriptor.self)
                if hasNULInStringFields(field, descriptor: nested, depth: depth + 1) { return true }
            }
        default:
            return false  // groups or garbage: unpack decides
        }
    }
    return false
}
