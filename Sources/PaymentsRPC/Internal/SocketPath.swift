import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Decides what may be done with an existing file at the socket path.
enum SocketPath {
    /// Removes a socket file left by a dead process; refuses a live one and anything that is not a socket.
    static func removeIfStale(_ path: String, eventLoopGroup: any EventLoopGroup) async throws {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw RPCServerError.socketPath(path: path, errno: errno)
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else { throw RPCServerError.notASocket(path: path) }
        // Only a connect tells a live listener from a leftover file.
        let live: Bool
        do {
            let channel = try await ClientBootstrap(group: eventLoopGroup).connect(unixDomainSocketPath: path).get()
            try? await channel.close()
            live = true
        } catch {
            live = false
        }
        if live { throw RPCServerError.addressInUse(path: path) }
        guard unlink(path) == 0 || errno == ENOENT else { throw RPCServerError.socketPath(path: path, errno: errno) }
    }
}
