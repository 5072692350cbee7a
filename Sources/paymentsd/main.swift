import PaymentsDaemon

#if canImport(Glibc)
import Glibc
#endif

/// paymentsd: see `Daemon` for what it does and README.md for how to run it.
let environment = ProcessEnvironment.current()
let status = await Daemon.main(arguments: Array(CommandLine.arguments.dropFirst()), environment: environment)
exit(status)
