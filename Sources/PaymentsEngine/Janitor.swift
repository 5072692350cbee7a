import Logging
import PaymentsDomain
import PaymentsStore

/// The janitor's sweep (guarantee 9): nothing stays half-done or open past its time.
///
/// One sweep resumes the unfinished operations that are due, applies webhook
/// events stored but not applied, asks Stripe about refunds it left pending
/// too long, and expires checkouts past `expires_at`
/// plus a grace, Stripe first, then the release. It counts what it could
/// not fix. Runs every PAYMENTSD_JANITOR_INTERVAL seconds and on `Reconcile`.
public final class Janitor: Sendable {
    public struct Report: Sendable, Equatable {
        public var expired = 0
        public var resumed = 0
        public var repaired = 0
        public var orphans = 0
        public var stuck = 0
    }

    /// Operations that failed this often are stuck: they keep being retried, and counted.
    public static let stuckAfterAttempts = 5
    /// Seconds past `expires_at` before the janitor expires a checkout itself (Stripe's own
    /// expiry and its webhook usually come first).
    public static let expiryGrace: Int64 = 60

    private let checkout: CheckoutEngine
    private let events: EventInbox
    private let catchUp: EventCatchUp
    private let logger: Logger
    /// Open checkouts a sweep asks Stripe about at most; Reconcile asks about more.
    static let askLimitPerSweep = 20
    static let askLimitPerReconcile = 100

    init(checkout: CheckoutEngine, events: EventInbox, catchUp: EventCatchUp, logger: Logger) {
        self.checkout = checkout
        self.events = events
        self.catchUp = catchUp
        self.logger = logger
    }

    /// One sweep; `force` resumes every unfinished operation regardless of its backoff (start-up,
    /// Reconcile). `askingEveryOpen` (Reconcile) asks Stripe about every open checkout, whatever its
    /// age and backoff; a sweep otherwise asks about those past PAYMENTSD_ASK_STRIPE_AFTER only.
    public func sweep(force: Bool, askingEveryOpen: Bool = false) async -> Report {
        var report = Report()
        // A database removed or damaged under the daemon was reported once, when it was noticed;
        // a sweep would only fail at every step and say so again. Passing trouble is swept through:
        // the sweep's first write that works ends it.
        if await self.checkout.store.trouble()?.isPermanent == true { return report }
        report.resumed = await self.checkout.resumeUnfinished(force: force)
        // What Stripe made while no webhook came, before anything is decided from the daemon's own clock.
        report.repaired = await self.catchUp.run(deadline: .now + .seconds(60))
        report.repaired += await self.events.applyPending()
        report.repaired += await self.checkout.askStripeAboutOpenCheckouts(
            everyOpen: askingEveryOpen, limit: askingEveryOpen ? Self.askLimitPerReconcile : Self.askLimitPerSweep)
        report.repaired += await self.checkout.refunds.settleStalePending(deadline: .now + .seconds(30))
        report.expired = await self.expireOverdue()
        do {
            let counts = try await self.checkout.store.read { db in try Self.counts(db) }
            report.stuck = counts.stuck
            report.orphans = counts.orphans
        } catch {
            self.logger.sweepFailure(.error, "cannot count stuck operations", error: error)
        }
        if report != Report() { self.logger.info("janitor sweep", metadata: ["report": "\(report)"]) }
        return report
    }

    /// Health of the invariants an operator watches (guarantee 13), for Metrics.
    public static func counts(_ db: any Connection) throws -> (stuck: Int, orphans: Int, pendingEvents: Int) {
        (
            try Invariants.stuckOperations(db, attempts: Self.stuckAfterAttempts),
            try Invariants.orphanedEvents(db),
            try Invariants.pendingEvents(db)
        )
    }

    private func expireOverdue() async -> Int {
        let cutoff = self.checkout.now() - Self.expiryGrace
        let overdue: [String]
        do {
            overdue = try await self.checkout.store.read { try Invariants.overdueCheckouts($0, cutoff: cutoff) }
        } catch {
            self.logger.sweepFailure(.error, "cannot list overdue checkouts", error: error)
            return 0
        }
        var expired = 0
        for paymentID in overdue {
            do {
                if try await self.checkout.expireOverdue(paymentID: paymentID, deadline: .now + .seconds(30)) {
                    expired += 1
                }
            } catch {
                self.logger.sweepFailure(
                    .warning, "expiring an overdue checkout failed; retried next sweep",
                    error: error, metadata: ["payment_id": "\(paymentID)"])
            }
        }
        return expired
    }
}
