import PaymentsStore
import ServiceLifecycle

/// Tells systemd how the daemon is doing: WATCHDOG=1 at half the watchdog
/// period while the daemon runs, STOPPING=1 as soon as shutdown begins.
/// READY=1 is sent by the RPC server once it listens.
///
/// A database that was removed or damaged under the daemon stops the pings (and says why in
/// STATUS=): nothing the daemon writes then is durable, and the unit's watchdog decides what comes
/// next. Passing trouble (a busy lock, a full disk) is only reported.
///
/// Placed last in the service group, so it is the first told to shut down
/// and says STOPPING=1 before the server starts draining.
struct SystemdService: Service {
    let notifier: SystemdNotifier
    let watchdogInterval: Duration?
    let store: Store

    func run() async throws {
        if let interval = self.watchdogInterval {
            try? await cancelWhenGracefulShutdown {
                var reported: StorageTrouble?? = .none
                while true {
                    let trouble = await self.store.trouble()
                    if reported != .some(trouble) {
                        self.notifier.notify(trouble.map { "STATUS=not serving: \($0)" } ?? "STATUS=serving")
                        reported = .some(trouble)
                    }
                    if trouble?.isPermanent != true { self.notifier.notify("WATCHDOG=1") }
                    try await Task.sleep(for: interval / 2)
                }
            }
        } else {
            try? await gracefulShutdown()
        }
        self.notifier.notify("STOPPING=1")
    }
}
