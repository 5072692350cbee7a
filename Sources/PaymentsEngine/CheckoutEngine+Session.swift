import PaymentsDomain
import PaymentsStore
import StripeClient

extension CheckoutEngine {
    /// Steps 2 and 3 of a checkout: the Stripe call and its record. Serves live calls and resumes.
    ///
    /// `answer` (the call that opened the checkout) is stored in the transaction that records the
    /// session, or the one that records Stripe's refusal.
    func createSession(
        paymentID: String, answer: AnswerRecorder<PaymentRecord>? = nil, deadline: ContinuousClock.Instant
    ) async throws -> PaymentRecord {
        CrashPoints.reach("create_checkout.payment_recorded")
        guard var payment = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }) else {
            throw PaymentsError.paymentNotFound(paymentID)
        }
        guard payment.status == .created, payment.checkoutSessionID == nil else {
            try await self.store.write { try OperationLog.finish($0, .createSession, paymentID: paymentID, now: self.now()) }
            return payment
        }
        let session: CheckoutSession
        do {
            session = try await self.sendSessionCreate(payment, answer: answer, staleMeansRetry: true, deadline: deadline)
        } catch is StaleExpiry {
            // Stripe validates a request before it looks at its idempotency key's memory, and saves
            // nothing for a request it refused: this 400 proves it never made a session under the key.
            // The attempt failed only because an outage outlasted the expires_at margin, so a new
            // attempt (its own key, a fresh expires_at) keeps the deal's one open checkout.
            payment = try await self.startNewAttempt(payment)
            session = try await self.sendSessionCreate(payment, answer: answer, staleMeansRetry: false, deadline: deadline)
        }
        CrashPoints.reach("create_checkout.session_created")
        let (recorded, unwanted): (PaymentRecord?, Bool) = try await self.store.write { db in
            let now = self.now()
            guard var current = try PaymentRecord.load(db, paymentID: paymentID),
                current.status == .created, current.checkoutSessionID == nil
            else {
                try OperationLog.advance(
                    db, .createSession, paymentID: paymentID, to: .expireUnwanted, detail: session.id, now: now)
                return (nil, true)
            }
            try PaymentRecord.recordSession(db, paymentID: paymentID, sessionID: session.id, url: session.url, now: now)
            try AuditLog.append(
                db, dealID: current.dealID, paymentID: paymentID, kind: "checkout.session_created",
                detail: "checkout_session_id=\(session.id)", now: now)
            try OperationLog.finish(db, .createSession, paymentID: paymentID, now: now)
            current.checkoutSessionID = session.id
            current.checkoutURL = session.url
            current.updatedAt = now
            try answer.record(db, current, now: now)
            return (current, false)
        }
        if unwanted { try await self.expireUnwanted(paymentID: paymentID, sessionID: session.id, deadline: deadline) }
        CrashPoints.reach("create_checkout.session_recorded")
        if let recorded { return recorded }
        return try await self.store.read { try PaymentRecord.load($0, paymentID: paymentID)! }
    }

    /// Stripe refused a session create whose `expires_at` has gone stale (see `createSession`).
    private struct StaleExpiry: Error {}

    /// Sends the session create of the payment's current attempt. A refusal marks the payment FAILED
    /// and releases its holds, unless `staleMeansRetry` and the refusal is a stale one
    /// (`StaleExpiry`), which a new attempt answers; a new attempt is made once per call.
    private func sendSessionCreate(
        _ payment: PaymentRecord, answer: AnswerRecorder<PaymentRecord>?, staleMeansRetry: Bool,
        deadline: ContinuousClock.Instant
    ) async throws -> CheckoutSession {
        do {
            return try await self.stripe.createCheckoutSession(
                StripeRequests.checkoutSession(for: payment), idempotencyKey: Self.sessionKey(payment),
                deadline: deadline)
        } catch StripeError.rejected(let status, _, _, _) where status == 400 && staleMeansRetry && self.isStale(payment) {
            throw StaleExpiry()
        } catch StripeError.rejected(_, _, let code, let message) {
            CrashPoints.reach("create_checkout.rejected_by_stripe")
            let refusal = PaymentsError.stripeRejected(code: code, message: message)
            try await self.store.write { db in
                let now = self.now()
                guard let current = try PaymentRecord.load(db, paymentID: payment.paymentID), current.status == .created
                else { return }
                try PaymentRecord.transition(
                    db, current, to: .failed, kind: "checkout.rejected_by_stripe", detail: "stripe_code=\(code)",
                    failureReason: "stripe_rejected" + (code.isEmpty ? "" : ": \(code)"), now: now)
                try CheckoutHolds.release(db, paymentID: payment.paymentID, now: now)
                try OperationLog.finish(db, .createSession, paymentID: payment.paymentID, now: now)
                try answer.record(db, failure: refusal, now: now)
            }
            throw refusal
        } catch let error as StripeError {
            try await self.recordFailure(.createSession, paymentID: payment.paymentID, error: error)
            throw PaymentsError.stripeUnavailable
        }
    }

    /// The Stripe idempotency key of the payment's session create: from the payment id, and from
    /// the attempt number after the first (whose key predates attempts and keeps its form).
    static func sessionKey(_ payment: PaymentRecord) -> String {
        let key = "paymentsd-\(payment.paymentID)-create-session"
        return payment.sessionAttempt == 0 ? key : "\(key)-\(payment.sessionAttempt)"
    }

    /// Whether Stripe would refuse the payment's `expires_at` now, as too soon.
    private func isStale(_ payment: PaymentRecord) -> Bool {
        payment.expiresAt < self.now() + Self.stripeMinimumExpiry
    }

    /// Records a new attempt of the session create: the next attempt number and a fresh
    /// `expires_at`, in one transaction, before the new key is ever sent.
    private func startNewAttempt(_ payment: PaymentRecord) async throws -> PaymentRecord {
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

    /// A session Stripe made for a payment that no longer wants one is expired, never left open (guarantee 3).
    func expireUnwanted(paymentID: String, sessionID: String, deadline: ContinuousClock.Instant) async throws {
        do {
            _ = try await self.stripe.expireCheckoutSession(
                sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-unwanted", deadline: deadline)
        } catch StripeError.rejected {
            // Not open any more (expired or completed): nothing is left open at Stripe by us.
        } catch let error as StripeError {
            try await self.recordFailure(.createSession, paymentID: paymentID, error: error)
            throw PaymentsError.stripeUnavailable
        }
        self.logger.notice("expired a session the database did not want", metadata: ["payment_id": "\(paymentID)"])
        try await self.store.write { try OperationLog.finish($0, .createSession, paymentID: paymentID, now: self.now()) }
    }

    func recordFailure(_ kind: OperationLog.Kind, paymentID: String, error: StripeError) async throws {
        self.logger.warning(
            "Stripe call failed; the operation stays pending", metadata: ["payment_id": "\(paymentID)", "error": "\(error)"])
        try await self.store.write { db in
            try OperationLog.recordFailure(db, kind, paymentID: paymentID, error: "\(error)", now: self.now())
        }
    }
}
