import PaymentsDomain
import PaymentsStore

extension CheckoutEngine {
    /// The longest wait between two questions to Stripe about one open checkout.
    static let longestOutcomeBackoff: Int64 = 6 * 3600

    /// Asks Stripe about open checkouts whose outcome no event settled (guarantee 9), through
    /// `confirmCheckout`: paid or nothing to pay is fulfilled, expired released, open left alone
    /// and asked about again after a doubling backoff. A sweep asks about `limit` at most, the
    /// longest unasked first, so 1,000 open checkouts are not 1,000 calls per sweep.
    ///
    /// `everyOpen` (Reconcile) asks about every open checkout with a session, whatever its age and
    /// backoff. Returns how many checkouts were settled.
    func askStripeAboutOpenCheckouts(everyOpen: Bool, limit: Int) async -> Int {
        let now = self.now()
        let askAfter = self.configuration.askStripeAfter
        let due: [String]
        do {
            due = try await self.store.read { db in
                try OutcomeChecks.due(
                    db, createdBefore: everyOpen ? now : now - askAfter, now: now, ignoringBackoff: everyOpen,
                    limit: limit)
            }
        } catch {
            self.logger.sweepFailure(.error, "cannot list open checkouts to ask Stripe about", error: error)
            return 0
        }
        var settled = 0
        for paymentID in due {
            do {
                let payment = try await self.confirmCheckout(.payment(paymentID), deadline: .now + self.configuration.resumeTimeout)
                if payment.status != .created {
                    settled += 1
                    continue
                }
                try await self.store.write { db in
                    let checks = try OutcomeChecks.checks(db, paymentID: paymentID)
                    let backoff = min(askAfter << Int64(min(checks + 1, 20)), Self.longestOutcomeBackoff)
                    try OutcomeChecks.record(db, paymentID: paymentID, nextAt: now + max(backoff, 1))
                }
            } catch {
                self.logger.sweepFailure(
                    .warning, "asking Stripe about an open checkout failed; asked again next sweep",
                    error: error, metadata: ["payment_id": "\(paymentID)"])
            }
        }
        self.outcomes.add(settled, ordering: .relaxed)
        return settled
    }

    /// PAYMENTSD_ASK_STRIPE_AFTER: an open checkout older than this has an unknown outcome until asked.
    public var askStripeAfter: Int64 { self.configuration.askStripeAfter }

    /// Open checkouts settled by asking Stripe, since start-up.
    public var settledByAskingTotal: Int { self.outcomes.load(ordering: .relaxed) }
}
