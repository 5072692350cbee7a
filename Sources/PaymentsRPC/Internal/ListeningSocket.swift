#if canImport(Glibc)
import Glibc
#endif

/// The listening Unix socket, made here rather than by SwiftNIO for two reasons: a path may use
/// all of `sun_path` (107 bytes on Linux; NIO keeps to the 103 of the BSDs), and the server needs
/// the descriptor to shed connections itself when the process is out of descriptors
/// (`AcceptErrorObserver`).
enum ListeningSocket {
    /// The longest path a socket address holds here, without its terminating NUL.
    static let maxPathBytes = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// A non-blocking socket bound to `path` and listening.
    static func bind(path: String, backlog: Int32) throws -> Int32 {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.maxPathBytes else {
            throw RPCServerError.socketPath(path: path, errno: ENAMETOOLONG)
        }
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue), 0)
        guard descriptor >= 0 else { throw RPCServerError.socketPath(path: path, errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(descriptor, backlog) == 0 else {
            let code = errno
            close(descriptor)
            throw code == EADDRINUSE
                ? RPCServerError.addressInUse(path: path) : RPCServerError.socketPath(path: path, errno: code)
        }
        return descriptor
    }
}
