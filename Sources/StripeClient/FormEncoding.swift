/// Stripe's form encoding: nested parameters flattened to bracketed keys
/// (`line_items[0][price_data][unit_amount]=500`), in the order given.
public struct FormParameters: Sendable, Equatable {
    public private(set) var pairs: [(key: String, value: String)] = []

    public init() {}

    public mutating func add(_ key: String, _ value: String) { self.pairs.append((key, value)) }
    public mutating func add(_ key: String, _ value: Int64) { self.pairs.append((key, String(value))) }

    /// `application/x-www-form-urlencoded` bytes; everything but RFC 3986 unreserved characters is escaped.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        for (index, pair) in self.pairs.enumerated() {
            if index > 0 { out.append(UInt8(ascii: "&")) }
            Self.escape(pair.key, into: &out)
            out.append(UInt8(ascii: "="))
            Self.escape(pair.value, into: &out)
        }
        return out
    }

    /// The same encoding, for query strings.
    public var queryString: String { String(decoding: self.encoded(), as: UTF8.self) }

    private static func escape(_ string: String, into out: inout [UInt8]) {
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            }
        }
    }

    public static func == (lhs: FormParameters, rhs: FormParameters) -> Bool {
        lhs.pairs.elementsEqual(rhs.pairs) { $0.key == $1.key && $0.value == $1.value }
    }
}
