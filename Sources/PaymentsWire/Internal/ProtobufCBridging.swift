import CProtobufC

/// Packs into a fresh array. An all-default proto3 message packs to zero
/// bytes, and a zero-capacity array has no base address, hence the guard.
func packToArray(size: Int, _ pack: (UnsafeMutablePointer<UInt8>) -> Int) -> [UInt8] {
    if size == 0 { return [] }
    return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
        count = pack(buffer.baseAddress!)
    }
}

/// Copies a protobuf-c string out before the message is freed.
func swiftString(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
    guard let pointer else { return "" }
    return String(cString: pointer)
}

func swiftBytes(_ data: ProtobufCBinaryData) -> [UInt8] {
    guard data.len > 0, let base = data.data else { return [] }
    return Array(UnsafeBufferPointer(start: base, count: data.len))
}

func binaryData(_ value: ProtobufCBinaryDataLike) -> ProtobufCBinaryData {
    ProtobufCBinaryData(len: value.len, data: value.data)
}

/// Runs `body` over the unpacked message and frees it afterwards, so no
/// pointer into it escapes.
func withUnpacked<Message, Result>(
    _ bytes: [UInt8],
    descriptor: ProtobufCMessageDescriptor,
    unpack: (Int, UnsafePointer<UInt8>?) -> UnsafeMutablePointer<Message>?,
    free: (UnsafeMutablePointer<Message>) -> Void,
    _ body: (Message) throws -> Result
) throws -> Result {
    guard !hasNULInStringFields(bytes, descriptor: descriptor) else { throw WireError.undecodable }
    let message = bytes.withUnsafeBufferPointer { unpack($0.count, $0.baseAddress) }
    guard let message else { throw WireError.undecodable }
    defer { free(message) }
    return try body(message.pointee)
}

/// Reads a repeated field of protobuf-c (`n_x`, `x`) as a Swift array.
func repeated<Element, Result>(
    _ count: Int, _ items: UnsafeMutablePointer<UnsafeMutablePointer<Element>?>?,
    _ transform: (Element) throws -> Result
) rethrows -> [Result] {
    guard count > 0, let items else { return [] }
    return try (0..<count).compactMap { index in try items[index].map { try transform($0.pointee) } }
}

func repeatedStrings(_ count: Int, _ items: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [String] {
    guard count > 0, let items else { return [] }
    return (0..<count).map { swiftString(items[$0]) }
}

func cStringArray(_ strings: [String], in arena: CArena) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? {
    let array = arena.allocate(UnsafeMutablePointer<CChar>?.self, count: strings.count)
    for (index, string) in strings.enumerated() { array![index] = arena.cString(string) }
    return array
}

func cMessageArray<Element, CMessage>(
    _ elements: [Element], in arena: CArena, _ build: (Element, CArena) -> UnsafeMutablePointer<CMessage>
) -> UnsafeMutablePointer<UnsafeMutablePointer<CMessage>?>? {
    let array = arena.allocate(UnsafeMutablePointer<CMessage>?.self, count: elements.count)
    for (index, element) in elements.enumerated() { array![index] = build(element, arena) }
    return array
}
