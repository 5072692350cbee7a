import PaymentsEngine
import ServiceLifecycle

/// Resumes unfinished operations and applies stored webhook events not yet
/// applied: all of them right after start-up (whatever a crash left
/// half-done), then what is due every janitor interval, each through the
/// same code as a live call.
struct ResumeService: Service {
    let checkout: CheckoutEngine
    let events: EventInbox
    let interval: Duration

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            await self.checkout.resumeUnfinished(force: true)
            await self.events.applyPending()
            while true {
                try await Task.sleep(for: self.interval)
                await self.checkout.resumeUnfinished(force: false)
                await self.events.applyPending()
            }
        }
    }
}
