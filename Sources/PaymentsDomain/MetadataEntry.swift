/// One metadata entry of a checkout, passed to Stripe as `metadata[key]`.
public struct MetadataEntry: Sendable, Hashable {
    public var key: String
    public var value: String

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}
