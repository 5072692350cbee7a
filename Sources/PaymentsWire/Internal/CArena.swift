#if canImport(Glibc)
import Glibc
#endif

/// Owns the C memory a protobuf-c message borrows while it is packed.
///
/// protobuf-c messages hold raw `char *` and pointer arrays. Nested and
/// repeated fields cannot be built with nested `withCString` scopes, so every
/// block is allocated here and freed together when the arena dies; callers
/// pack inside `withExtendedLifetime(arena)`.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    init() {}

    func cString(_ string: String) -> UnsafeMutablePointer<CChar> {
        let pointer = strdup(string)!
        self.blocks.append(UnsafeMutableRawPointer(pointer))
        return pointer
    }

    /// Zeroed storage for `count` values; nil for zero, as protobuf-c wants
    /// NULL for an empty repeated field.
    func allocate<T>(_: T.Type, count: Int = 1) -> UnsafeMutablePointer<T>? {
        guard count > 0 else { return nil }
        let raw = calloc(count, MemoryLayout<T>.stride)!
        self.blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }

    func bytes(_ bytes: [UInt8]) -> ProtobufCBinaryDataLike {
        guard !bytes.isEmpty, let raw = malloc(bytes.count) else { return (0, nil) }
        self.blocks.append(raw)
        bytes.withUnsafeBytes { raw.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return (bytes.count, raw.assumingMemoryBound(to: UInt8.self))
    }

    deinit {
        for block in self.blocks { free(block) }
    }
}

typealias ProtobufCBinaryDataLike = (len: Int, data: UnsafeMutablePointer<UInt8>?)

@available(*, unavailable)
extension CArena: Sendable {}
