import PaymentsDomain
import PaymentsStore
import StripeClient

extension CheckoutEngine {
    /// Records the intent to expire a payment's session before Stripe is asked: its cause, which
    /// chooses the final state, and the text the audit trail shows (a caller's reason, else the cause).
    func startExpiry(of payment: PaymentRecord, cause: ExpiryCause, reason: String? = nil) async throws {
        try await self.store.write { db in
            try OperationLog.start(
                db, .expireSession, dealID: payment.dealID, paymentID: payment.paymentID, recoveryPoint: .expiring,
                cause: cause, detail: reason ?? cause.rawValue, now: self.now())
        }
    }

    /// Expires the payment's session at Stripe first, then closes the payment and releases what it held
    /// (the steps are `ExpireSession`'s).
    /// If Stripe says the customer paid, the payment is fulfilled instead and the caller told `already_paid`.
    /// `answer` (a CancelCheckout's) is stored in the transaction that closes the checkout, or in the one
    /// that fulfils it.
    func expireSession(
        paymentID: String, cause: ExpiryCause, answer: AnswerRecorder<PaymentRecord>? = nil,
        deadline: ContinuousClock.Instant
    ) async throws {
        try await OperationRunner.run(
            ExpireSession(engine: self, paymentID: paymentID, cause: cause, answer: answer, deadline: deadline),
            from: .load)
    }
}
