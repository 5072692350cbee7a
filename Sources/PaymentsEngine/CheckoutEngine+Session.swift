import PaymentsDomain
import PaymentsStore
import StripeClient

extension CheckoutEngine {
    /// The steps of a checkout after its first transaction (`CreateSession`): the Stripe call and its
    /// record. Serves live calls and resumes.
    ///
    /// `answer` (the call that opened the checkout) is stored in the transaction that records the
    /// session, or the one that records Stripe's refusal.
    func createSession(
        paymentID: String, answer: AnswerRecorder<PaymentRecord>? = nil, deadline: ContinuousClock.Instant
    ) async throws -> PaymentRecord {
        CrashPoints.reach("create_checkout.payment_recorded")
        return try await OperationRunner.run(
            CreateSession(engine: self, paymentID: paymentID, answer: answer, deadline: deadline), from: .load)
    }

    /// The Stripe idempotency key of the payment's session create: from the payment id, and from
    /// the attempt number after the first (whose key predates attempts and keeps its form).
    static func sessionKey(_ payment: PaymentRecord) -> String {
        let key = "paymentsd-\(payment.paymentID)-create-session"
        return payment.sessionAttempt == 0 ? key : "\(key)-\(payment.sessionAttempt)"
    }

    /// Whether Stripe would refuse the payment's `expires_at` now, as too soon.
    func isStale(_ payment: PaymentRecord) -> Bool {
        payment.expiresAt < self.now() + Self.stripeMinimumExpiry
    }

    /// Records a new attempt of the session create: the next attempt number and a fresh
    /// `expires_at`, in one transaction, before the new key is ever sent.
    func startNewAttempt(_ payment: PaymentRecord) async throws -> PaymentRecord {
        try await self.store.write { db in
            let now = self.now()
            var next = payment
            next.sessionAttempt += 1
            next.expiresAt = Self.expiresAt(now: now, ttl: self.configuration.checkoutTTL)
            next.updatedAt = now
            guard
                try PaymentRecord.startSessionAttempt(
                    db, paymentID: payment.paymentID, attempt: next.sessionAttempt, expiresAt: next.expiresAt, now: now)
            else { throw PaymentsError.paymentNotFound(payment.paymentID) }
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "checkout.session_retried",
                detail: "attempt=\(next.sessionAttempt) expires_at=\(next.expiresAt)", now: now)
            return next
        }
    }

    /// Resumes an operation stopped after Stripe made a session nobody wants: it is expired.
    func expireUnwanted(paymentID: String, sessionID: String, deadline: ContinuousClock.Instant) async throws {
        _ = try await OperationRunner.run(
            CreateSession(engine: self, paymentID: paymentID, answer: nil, deadline: deadline),
            from: .expireUnwanted(sessionID: sessionID))
    }

    func recordFailure(_ kind: OperationLog.Kind, paymentID: String, error: StripeError) async throws {
        self.logger.warning(
            "Stripe call failed; the operation stays pending", metadata: ["payment_id": "\(paymentID)", "error": "\(error)"])
        try await self.store.write { db in
            try OperationLog.recordFailure(db, kind, paymentID: paymentID, error: "\(error)", now: self.now())
        }
    }
}
