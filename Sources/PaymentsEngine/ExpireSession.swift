import PaymentsDomain
import PaymentsStore
import StripeClient

/// Expires a payment's session at Stripe first, then closes the payment (EXPIRED or CANCELED, as
/// its `ExpiryCause` says) and releases what it held (guarantees 5, 8). If Stripe says the
/// customer paid, the payment is fulfilled instead and the caller told `already_paid`.
struct ExpireSession: OperationSteps {
    /// The steps, in the order they run.
    enum Step: Sendable {
        /// Read the payment; one no longer open finishes the operation.                        (read)
        case load
        /// `POST /v1/checkout/sessions/{id}/expire`.                                           (Stripe)
        case expireAtStripe(sessionID: String)
        /// Stripe refused the expire (it expires only open sessions): ask what the session is. (Stripe)
        case retrieve(sessionID: String)
        /// The session is complete: fulfilled if paid, the refusal stored as the answer.       (tx)
        case settleCompleted(CheckoutSession)
        /// Stripe's answer is unknown: noted, and retried later.                               (tx)
        case recordUnavailable(StripeError)
        /// Closed, holds released, the answer stored.                                          (tx)
        case close
        case done
    }

    let engine: CheckoutEngine
    let paymentID: String
    let cause: ExpiryCause
    /// A CancelCheckout's answer: stored in the transaction that closes the checkout or fulfils it.
    let answer: AnswerRecorder<PaymentRecord>?
    let deadline: ContinuousClock.Instant

    func perform(_ step: Step) async throws -> StepOutcome<Step, Void> {
        let engine = self.engine
        let paymentID = self.paymentID
        switch step {
        case .load:
            guard let payment = try await engine.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }),
                payment.status == .created
            else {
                try await engine.store.write {
                    try OperationLog.finish($0, .expireSession, paymentID: paymentID, now: engine.now())
                }
                return .finished(())
            }
            guard let sessionID = payment.checkoutSessionID else {
                return .next(.close, crashPoint: self.cause.crashPoint)
            }
            return .next(.expireAtStripe(sessionID: sessionID), crashPoint: nil)

        case .expireAtStripe(let sessionID):
            do {
                _ = try await engine.stripe.expireCheckoutSession(
                    sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-session", deadline: self.deadline)
                return .next(.close, crashPoint: self.cause.crashPoint)
            } catch StripeError.rejected {
                return .next(.retrieve(sessionID: sessionID), crashPoint: nil)
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }

        case .retrieve(let sessionID):
            let session: CheckoutSession
            do {
                session = try await engine.stripe.retrieveCheckoutSession(sessionID, deadline: self.deadline)
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }
            switch session.status {
            case .complete: return .next(.settleCompleted(session), crashPoint: nil)
            case .open, .expired: return .next(.close, crashPoint: self.cause.crashPoint)
            }

        case .settleCompleted(let session):
            // Paid means fulfilled; unpaid (an asynchronous method still settling) keeps it open.
            let refusal =
                session.paymentStatus == .paid
                ? PaymentsError.alreadyPaid(paymentID: paymentID)
                : PaymentsError.checkoutInProgress(paymentID: paymentID)
            try await engine.store.write { db in
                let now = engine.now()
                guard let current = try PaymentRecord.load(db, paymentID: paymentID) else { return }
                if session.paymentStatus == .paid {
                    try Fulfilment.apply(db, current, paid: .init(session), source: "expire_refused", now: now)
                }
                try OperationLog.finish(db, .expireSession, paymentID: paymentID, now: now)
                try self.answer.record(db, failure: refusal, now: now)
            }
            throw refusal

        case .recordUnavailable(let error):
            try await engine.recordFailure(.expireSession, paymentID: paymentID, error: error)
            throw PaymentsError.stripeUnavailable

        case .close:
            let cause = self.cause
            try await engine.store.write { db in
                let now = engine.now()
                guard var current = try PaymentRecord.load(db, paymentID: paymentID), current.status == .created else {
                    return
                }
                let reason = try OperationLog.find(db, .expireSession, paymentID: paymentID)?.detail ?? cause.rawValue
                try PaymentRecord.transition(
                    db, current, to: cause.finalStatus, kind: cause.auditKind,
                    detail: reason.isEmpty ? "" : "reason=\(reason)", now: now)
                try CheckoutHolds.release(db, paymentID: paymentID, now: now)
                try OperationLog.finish(db, .expireSession, paymentID: paymentID, now: now)
                current.status = cause.finalStatus
                current.updatedAt = now
                try self.answer.record(db, current, now: now)
            }
            return .next(.done, crashPoint: cause == .canceled ? "cancel_checkout.checkout_closed" : nil)

        case .done:
            return .finished(())
        }
    }
}
