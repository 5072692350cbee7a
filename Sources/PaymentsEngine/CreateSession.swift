import PaymentsDomain
import PaymentsStore
import StripeClient

/// Creates the Stripe Checkout Session of a CREATED payment and records it (guarantee 3): the
/// steps of a checkout after its first transaction (`CheckoutEngine.decide`), for a live call and
/// a resume alike. The Stripe key never changes within an attempt, so a resumed create gets back
/// the session Stripe already made.
struct CreateSession: OperationSteps {
    /// The steps, in the order they run.
    enum Step: Sendable {
        /// Read the payment; one that no longer wants a session finishes the operation.       (read)
        case load
        /// `POST /v1/checkout/sessions` under the attempt's idempotency key.                  (Stripe)
        case create(PaymentRecord, newAttemptAllowed: Bool)
        /// Stripe refused a stale `expires_at`: a new attempt, its own key, a fresh expiry.    (tx)
        case startNewAttempt(PaymentRecord)
        /// Stripe refused: FAILED, holds released, the refusal stored as the answer.          (tx)
        case recordRefusal(code: String, message: String)
        /// Stripe's answer is unknown: noted, and retried later under the same key.            (tx)
        case recordUnavailable(StripeError)
        /// The session recorded and the answer stored; or, if the payment moved on meanwhile,
        /// the session marked unwanted (recovery point `expire_unwanted`).                     (tx)
        case record(CheckoutSession)
        /// A session nobody wants is expired at Stripe, never left open.                      (Stripe)
        case expireUnwanted(sessionID: String)
        /// A subscription whose Stripe total differs from the caller's amounts: its session is
        /// expired at Stripe first.                                                            (Stripe)
        case expireMismatched(sessionID: String, expected: Int64, stripe: Int64?)
        /// Then FAILED `price_mismatch`, holds released, the refusal stored as the answer.     (tx)
        case recordMismatch(expected: Int64, stripe: Int64?)
        /// The operation finished after the unwanted session was expired.                      (tx)
        case finishUnwanted
        /// The payment as it ends.
        case done(PaymentRecord)
    }

    let engine: CheckoutEngine
    let paymentID: String
    /// The call that opened the checkout: its answer commits with the session, or the refusal.
    let answer: AnswerRecorder<PaymentRecord>?
    let deadline: ContinuousClock.Instant

    /// What the record step found.
    private enum Recording {
        case recorded(PaymentRecord)
        /// The payment moved on: the session is not wanted.
        case unwanted
        case priceMismatch(expected: Int64, stripe: Int64?)
    }

    /// What a subscription's caller said its prices charge, when it said so (every item's
    /// `unit_amount` given); nil otherwise, and for payment-mode checkouts (their amounts are sent).
    static func amountExpected(_ payment: PaymentRecord) -> Int64? {
        guard payment.mode == .subscription, payment.items.allSatisfy({ $0.unitAmount > 0 }) else { return nil }
        return payment.items.reduce(0) { $0 + $1.quantity * $1.unitAmount }
    }

    func perform(_ step: Step) async throws -> StepOutcome<Step, PaymentRecord> {
        let engine = self.engine
        let paymentID = self.paymentID
        switch step {
        case .load:
            guard let payment = try await engine.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }) else {
                throw PaymentsError.paymentNotFound(paymentID)
            }
            guard payment.status == .created, payment.checkoutSessionID == nil else {
                try await engine.store.write {
                    try OperationLog.finish($0, .createSession, paymentID: paymentID, now: engine.now())
                }
                return .finished(payment)
            }
            return .next(.create(payment, newAttemptAllowed: true), crashPoint: nil)

        case .create(let payment, let newAttemptAllowed):
            do {
                let session = try await engine.stripe.createCheckoutSession(
                    StripeRequests.checkoutSession(for: payment), idempotencyKey: CheckoutEngine.sessionKey(payment),
                    deadline: self.deadline)
                guard !session.id.isEmpty, let url = session.url, !url.isEmpty else {
                    // Not an open checkout a customer can pay: a bad answer, asked for again under the
                    // same key (Stripe answers a retry from what it stored).
                    return .next(
                        .recordUnavailable(.unavailable(reason: "a session answer without id or url")), crashPoint: nil)
                }
                return .next(.record(session), crashPoint: "create_checkout.session_created")
            } catch StripeError.rejected(let status, _, _, _)
                where status == 400 && newAttemptAllowed && engine.isStale(payment)
            {
                // Stripe validates a request before it looks at its idempotency key's memory, and saves
                // nothing for a request it refused: this 400 proves it never made a session under the
                // key. The attempt failed only because an outage outlasted the expires_at margin, so a
                // new attempt keeps the deal's one open checkout.
                return .next(.startNewAttempt(payment), crashPoint: nil)
            } catch StripeError.rejected(_, _, let code, let message) {
                return .next(.recordRefusal(code: code, message: message), crashPoint: "create_checkout.rejected_by_stripe")
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }

        case .startNewAttempt(let payment):
            return .next(.create(try await engine.startNewAttempt(payment), newAttemptAllowed: false), crashPoint: nil)

        case .recordRefusal(let code, let message):
            try await self.fail(
                PaymentsError.stripeRejected(code: code, message: message), kind: "checkout.rejected_by_stripe",
                detail: "stripe_code=\(code)", failureReason: "stripe_rejected" + (code.isEmpty ? "" : ": \(code)"))

        case .recordUnavailable(let error):
            try await engine.recordFailure(.createSession, paymentID: paymentID, error: error)
            throw PaymentsError.stripeUnavailable

        case .record(let session):
            let recording: Recording = try await engine.store.write { db in
                let now = engine.now()
                guard var current = try PaymentRecord.load(db, paymentID: paymentID),
                    current.status == .created, current.checkoutSessionID == nil
                else {
                    try OperationLog.advance(
                        db, .createSession, paymentID: paymentID, to: .expireUnwanted, detail: session.id, now: now)
                    return .unwanted
                }
                if let expected = Self.amountExpected(current), session.amountTotal != expected {
                    // Nothing recorded: a crash from here on resumes at the create, whose answer
                    // (the same session) is checked again.
                    return .priceMismatch(expected: expected, stripe: session.amountTotal)
                }
                try PaymentRecord.recordSession(db, paymentID: paymentID, sessionID: session.id, url: session.url, now: now)
                // A subscription's amount is its prices', which only Stripe knows.
                try PaymentRecord.recordSettlement(
                    db, paymentID: paymentID, paymentIntentID: nil, subscriptionID: nil, amountTotal: session.amountTotal)
                if current.mode == .subscription, let total = session.amountTotal { current.amountTotal = total }
                try AuditLog.append(
                    db, dealID: current.dealID, paymentID: paymentID, kind: "checkout.session_created",
                    detail: "checkout_session_id=\(session.id)", now: now)
                try OperationLog.finish(db, .createSession, paymentID: paymentID, now: now)
                current.checkoutSessionID = session.id
                current.checkoutURL = session.url
                current.updatedAt = now
                try self.answer.record(db, current, now: now)
                return .recorded(current)
            }
            switch recording {
            case .recorded(let recorded):
                return .next(.done(recorded), crashPoint: "create_checkout.session_recorded")
            case .unwanted:
                return .next(.expireUnwanted(sessionID: session.id), crashPoint: nil)
            case .priceMismatch(let expected, let stripe):
                return .next(.expireMismatched(sessionID: session.id, expected: expected, stripe: stripe), crashPoint: nil)
            }

        case .expireMismatched(let sessionID, let expected, let stripe):
            do {
                _ = try await engine.stripe.expireCheckoutSession(
                    sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-mismatched", deadline: self.deadline)
            } catch StripeError.rejected {
                // Not open any more: nothing of ours is left open at Stripe.
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }
            return .next(.recordMismatch(expected: expected, stripe: stripe), crashPoint: nil)

        case .recordMismatch(let expected, let stripe):
            try await self.fail(
                PaymentsError.priceMismatch(expected: expected, stripe: stripe), kind: "checkout.price_mismatch",
                detail: "expected=\(expected) stripe=\(stripe.map(String.init) ?? "unknown")", failureReason: "price_mismatch")

        case .expireUnwanted(let sessionID):
            do {
                _ = try await engine.stripe.expireCheckoutSession(
                    sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-unwanted", deadline: self.deadline)
            } catch StripeError.rejected {
                // Not open any more (expired or completed): nothing is left open at Stripe by us.
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }
            engine.logger.notice("expired a session the database did not want", metadata: ["payment_id": "\(paymentID)"])
            return .next(.finishUnwanted, crashPoint: nil)

        case .finishUnwanted:
            let payment = try await engine.store.write { db in
                try OperationLog.finish(db, .createSession, paymentID: paymentID, now: engine.now())
                return try PaymentRecord.load(db, paymentID: paymentID)
            }
            guard let payment else { throw PaymentsError.paymentNotFound(paymentID) }
            return .next(.done(payment), crashPoint: "create_checkout.session_recorded")

        case .done(let payment):
            return .finished(payment)
        }
    }

    /// A checkout that ends here without a session: FAILED, holds released, the operation finished and
    /// the refusal stored as the call's answer, in one transaction; then the refusal is thrown.
    private func fail(_ refusal: PaymentsError, kind: String, detail: String, failureReason: String) async throws -> Never {
        let engine = self.engine
        try await engine.store.write { db in
            let now = engine.now()
            guard let current = try PaymentRecord.load(db, paymentID: self.paymentID), current.status == .created else {
                return
            }
            try PaymentRecord.transition(
                db, current, to: .failed, kind: kind, detail: detail, failureReason: failureReason, now: now)
            try CheckoutHolds.release(db, paymentID: self.paymentID, now: now)
            try OperationLog.finish(db, .createSession, paymentID: self.paymentID, now: now)
            try self.answer.record(db, failure: refusal, now: now)
        }
        throw refusal
    }
}
