#if canImport(Glibc)
import Glibc
#endif

/// The listening sockets systemd passes (sd_listen_fds(3)), told apart by name.
///
/// `paymentsd.socket` names its socket `rpc` and `paymentsd-http.socket` names its `http`
/// (`FileDescriptorName=`); systemd lists the names in `LISTEN_FDNAMES`, in descriptor order. A
/// socket without a name of ours (an older unit: its name is its unit's) is the RPC socket, and
/// so is the only socket when no names are given.
enum SocketActivation {
    static let firstDescriptor: Int32 = 3

    struct Listeners: Equatable {
        var rpc: Int32?
        var http: Int32?
    }

    /// The sockets passed when `LISTEN_PID` names this process; the variables are removed so child
    /// processes do not take them for their own.
    static func inheritedListeners(environment: [String: String]) -> Listeners {
        guard let pid = environment["LISTEN_PID"].flatMap({ Int32($0) }), pid == getpid(),
            let count = environment["LISTEN_FDS"].flatMap({ Int($0) }), count >= 1
        else { return Listeners() }
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        let names = environment["LISTEN_FDNAMES"].map { $0.split(separator: ":", omittingEmptySubsequences: false) } ?? []
        var listeners = Listeners()
        for index in 0..<count {
            let descriptor = Self.firstDescriptor + Int32(index)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
            let name = index < names.count ? String(names[index]) : ""
            if name == "http" || name.hasSuffix("-http.socket") || (names.isEmpty && index == 1) {
                if listeners.http == nil { listeners.http = descriptor }
            } else if listeners.rpc == nil {
                listeners.rpc = descriptor
            }
        }
        return listeners
    }
}
