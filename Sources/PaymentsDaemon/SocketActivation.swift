#if canImport(Glibc)
import Glibc
#endif

/// The listening socket systemd passes (sd_listen_fds(3)), if it passed one to this process.
enum SocketActivation {
    static let firstDescriptor: Int32 = 3

    /// fd 3 when `LISTEN_PID` names this process and `LISTEN_FDS` is at least 1; the
    /// variables are removed so child processes do not take them for their own.
    static func inheritedListener(environment: [String: String]) -> Int32? {
        guard let pid = environment["LISTEN_PID"].flatMap({ Int32($0) }), pid == getpid(),
            let count = environment["LISTEN_FDS"].flatMap({ Int($0) }), count >= 1
        else { return nil }
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        _ = fcntl(Self.firstDescriptor, F_SETFD, FD_CLOEXEC)
        return Self.firstDescriptor
    }
}
