/// Why bytes could not become a message.
public enum WireError: Error, Equatable, Sendable {
    /// The bytes are not a valid encoding of the expected protobuf message.
    case undecodable
}
