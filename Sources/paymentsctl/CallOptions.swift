import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// Options every subcommand takes.
struct CallOptions: ParsableArguments {
    @Option(help: "The daemon's socket (default: $PAYMENTSD_SOCKET, else /run/paymentsd/paymentsd.sock).")
    var socket: String?

    @Flag(help: "Print the answer as JSON, for scripts.")
    var json = false

    @Option(name: .customLong("timeout-ms"), help: "The call's deadline in milliseconds (0: the daemon's default).")
    var timeoutMS: UInt32 = 0

    var socketPath: String {
        if let socket { return socket }
        if let fromEnvironment = getenv("PAYMENTSD_SOCKET"), fromEnvironment.pointee != 0 {
            return String(cString: fromEnvironment)
        }
        return "/run/paymentsd/paymentsd.sock"
    }
}
