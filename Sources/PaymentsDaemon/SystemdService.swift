import ServiceLifecycle

/// Tells systemd how the daemon is doing: WATCHDOG=1 at half the watchdog
/// period while the daemon runs, STOPPING=1 as soon as shutdown begins.
/// READY=1 is sent by the RPC server once it listens.
///
/// Placed last in the service group, so it is the first told to shut down
/// and says STOPPING=1 before the server starts draining.
struct SystemdService: Service {
    let notifier: SystemdNotifier
    let watchdogInterval: Duration?

    func run() async throws {
        if let interval = self.watchdogInterval {
            try? await cancelWhenGracefulShutdown {
                while true {
                    self.notifier.notify("WATCHDOG=1")
                    try await Task.sleep(for: interval / 2)
                }
            }
        } else {
            try? await gracefulShutdown()
        }
        self.notifier.notify("STOPPING=1")
    }
}
