import PaymentsEngine
import ServiceLifecycle

/// Resumes unfinished operations: all of them right after start-up (whatever a
/// crash left half-done), then those due every janitor interval, each
/// through the same step code as a live call.
struct ResumeService: Service {
    let checkout: CheckoutEngine
    let interval: Duration

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            await self.checkout.resumeUnfinished(force: true)
            while true {
                try await Task.sleep(for: self.interval)
                await self.checkout.resumeUnfinished(force: false)
            }
        }
    }
}
