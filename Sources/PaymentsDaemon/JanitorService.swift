import PaymentsEngine
import ServiceLifecycle

/// Runs the janitor's sweep right after start-up (resuming everything a crash
/// left half-done) and then every janitor interval.
struct JanitorService: Service {
    let janitor: Janitor
    let interval: Duration

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            _ = await self.janitor.sweep(force: true)
            while true {
                try await Task.sleep(for: self.interval)
                _ = await self.janitor.sweep(force: false)
            }
        }
    }
}
