/// Why the server could not start listening.
public enum RPCServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Another process (a live daemon) accepts connections on the path.
    case addressInUse(path: String)
    /// Something that is not a socket sits at the path; it is not ours to remove.
    case notASocket(path: String)
    /// The path could not be inspected or cleaned up.
    case socketPath(path: String, errno: Int32)

    public var description: String {
        switch self {
        case .addressInUse(let path):
            "another process is serving \(path); stop it first or choose another PAYMENTSD_SOCKET"
        case .notASocket(let path):
            "\(path) exists and is not a socket; refusing to replace it"
        case .socketPath(let path, let errno):
            "cannot prepare the socket path \(path): errno \(errno)"
        }
    }
}
