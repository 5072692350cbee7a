import PaymentsProtoC

/// A key/value pair: request metadata, status details, checkout metadata.
public struct Header: Sendable, Hashable {
    public var key: String
    public var value: String

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }

    init(_ c: Payments__V1__Header) {
        self.init(swiftString(c.key), swiftString(c.value))
    }

    /// Builds the C array of a repeated Header field inside `arena`.
    static func cArray(_ headers: [Header], in arena: CArena)
        -> UnsafeMutablePointer<UnsafeMutablePointer<Payments__V1__Header>?>?
    {
        let array = arena.allocate(UnsafeMutablePointer<Payments__V1__Header>?.self, count: headers.count)
        for (index, header) in headers.enumerated() {
            let c = arena.allocate(Payments__V1__Header.self)!
            payments__v1__header__init(c)
            c.pointee.key = arena.cString(header.key)
            c.pointee.value = arena.cString(header.value)
            array![index] = c
        }
        return array
    }
}
