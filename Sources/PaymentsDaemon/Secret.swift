/// A secret value (Stripe key, webhook secret) that never prints itself.
///
/// Interpolating it into a log line or an error gives "<redacted>", so a
/// careless log statement cannot leak it.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String

    public init(_ value: String) { self.value = value }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}
