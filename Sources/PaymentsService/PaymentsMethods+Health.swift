import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `Health`: answers from the store, so a daemon whose database is gone, or cannot take writes
    /// now, is not reported healthy.
    func health(_ request: HealthRequest, _ context: CallContext) async throws -> HealthReply {
        var serving = await self.store.trouble() == nil
        var pending: Int64 = 0
        do {
            pending = try await self.store.read { connection in try OperationLog.pendingCount(connection) }
        } catch is StorageTrouble {
            serving = false
        }
        return HealthReply(
            status: serving ? .serving : .notServing, version: PaymentsVersion.current,
            uptimeSeconds: UInt64((ContinuousClock.now - self.startedAt).components.seconds),
            pendingOperations: UInt64(pending))
    }

    /// `Metrics`: Prometheus text of requests, latencies and connections, and the invariants an
    /// operator watches (guarantee 13), read from the store at the time of the call.
    func metrics(_ request: MetricsRequest, _ context: CallContext) async throws -> MetricsReply {
        let now = self.now()
        let askAfter = self.checkout.askStripeAfter
        let gauges = try await self.store.read { db in
            let counts = try Janitor.counts(db)
            let overdue = try Invariants.overdueCheckouts(db, cutoff: now - Janitor.expiryGrace).count
            let late = try Invariants.latePayments(db)
            // Zero unless something is wrong: Stripe never refunds more than was paid, and the
            // refunds table refuses it for the refunds paymentsd sends.
            let overRefunded = try Invariants.overRefundedPayments(db)
            let strayHolds = try Invariants.claimsHeldWithoutCheckout(db)
            return [
                ("paymentsd_operations_pending", "Operations started and not finished.", Int(try OperationLog.pendingCount(db))),
                ("paymentsd_operations_stuck", "Unfinished operations that failed \(Janitor.stuckAfterAttempts) times or more.", counts.stuck),
                ("paymentsd_stripe_events_pending", "Webhook events stored and not applied yet.", counts.pendingEvents),
                ("paymentsd_stripe_events_orphaned", "Webhook events for objects no payment of paymentsd knows.", counts.orphans),
                ("paymentsd_checkouts_overdue", "Open checkouts past their expiry and grace (holds outliving their session).", overdue),
                ("paymentsd_payments_late", "Payments that arrived for a checkout already closed.", late),
                ("paymentsd_payments_over_refunded", "Payments whose succeeded refunds exceed the amount paid.", overRefunded),
                ("paymentsd_claims_held_without_checkout", "Names held for a checkout that is no longer open.", strayHolds),
                ("paymentsd_payments_outcome_unknown",
                 "Open checkouts older than PAYMENTSD_ASK_STRIPE_AFTER: only Stripe knows whether they were paid.",
                 try OutcomeChecks.unknownCount(db, createdBefore: now - askAfter)),
                ("paymentsd_stripe_events_cursor_age_seconds",
                 "Seconds since the Events API catch-up last read Stripe's list to its end (-1: not yet).",
                 try StripeEventCursor.load(db).reachedEndAt.map { Int(now - $0) } ?? -1),
            ]
        }
        var text = self.metrics.exposition()
        for (name, help, value) in gauges {
            text += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(value)\n"
        }
        let counters = [
            ("paymentsd_stripe_events_caught_up_total", "Events fetched from the Events API that no webhook had brought.",
             self.catchUp.caughtUpTotal),
            ("paymentsd_payments_settled_by_asking_total", "Open checkouts settled by asking Stripe about their session.",
             self.checkout.settledByAskingTotal),
            ("paymentsd_stripe_connections_opened_total", "Connections opened to Stripe (calls reuse open ones).",
             self.stripe.connectionsOpened),
        ]
        for (name, help, value) in counters {
            text += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(value)\n"
        }
        return MetricsReply(text: text)
    }
}
