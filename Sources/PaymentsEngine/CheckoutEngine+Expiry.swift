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

    /// Expires the payment's session at Stripe first, then cancels the payment and releases what it held.
    /// If Stripe says the customer paid, the payment is fulfilled instead and the caller told `already_paid`.
    /// `answer` (a CancelCheckout's) is stored in the transaction that closes the checkout, or in the one
    /// that fulfils it.
    func expireSession(
        paymentID: String, cause: ExpiryCause, answer: AnswerRecorder<PaymentRecord>? = nil,
        deadline: ContinuousClock.Instant
    ) async throws {
        guard let payment = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }),
            payment.status == .created
        else {
            try await self.store.write { try OperationLog.finish($0, .expireSession, paymentID: paymentID, now: self.now()) }
            return
        }
        if let sessionID = payment.checkoutSessionID {
            do {
                _ = try await self.stripe.expireCheckoutSession(
                    sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-session", deadline: deadline)
            } catch StripeError.rejected {
                // Stripe expires only open sessions: ask what this one is.
                let session: CheckoutSession
                do {
                    session = try await self.stripe.retrieveCheckoutSession(sessionID, deadline: deadline)
                } catch let error as StripeError {
                    try await self.recordFailure(.expireSession, paymentID: paymentID, error: error)
                    throw PaymentsError.stripeUnavailable
                }
                if session.status == .complete {
                    let refusal =
                        session.paymentStatus == .paid
                        ? PaymentsError.alreadyPaid(paymentID: paymentID)
                        : PaymentsError.checkoutInProgress(paymentID: paymentID)
                    try await self.settleCompleted(payment, session, answer: answer, refusal: refusal)
                    throw refusal
                }
            } catch let error as StripeError {
                try await self.recordFailure(.expireSession, paymentID: paymentID, error: error)
                throw PaymentsError.stripeUnavailable
            }
        }
        CrashPoints.reach(cause.crashPoint)
        try await self.store.write { db in
            let now = self.now()
            guard var current = try PaymentRecord.load(db, paymentID: paymentID), current.status == .created else { return }
            let reason = try OperationLog.find(db, .expireSession, paymentID: paymentID)?.detail ?? cause.rawValue
            try PaymentRecord.transition(
                db, current, to: cause.finalStatus, kind: cause.auditKind,
                detail: reason.isEmpty ? "" : "reason=\(reason)", now: now)
            try CheckoutHolds.release(db, paymentID: paymentID, now: now)
            try OperationLog.finish(db, .expireSession, paymentID: paymentID, now: now)
            current.status = cause.finalStatus
            current.updatedAt = now
            try answer.record(db, current, now: now)
        }
        if cause == .canceled { CrashPoints.reach("cancel_checkout.checkout_closed") }
    }

    /// A session found complete while trying to expire it: paid means fulfilled; unpaid (an async
    /// method still settling) keeps the checkout open.
    /// `refusal` is what the caller is told, stored as `answer` in the same transaction.
    func settleCompleted(
        _ payment: PaymentRecord, _ session: CheckoutSession, answer: AnswerRecorder<PaymentRecord>?,
        refusal: PaymentsError
    ) async throws {
        try await self.store.write { db in
            let now = self.now()
            guard let current = try PaymentRecord.load(db, paymentID: payment.paymentID) else { return }
            if session.paymentStatus == .paid {
                try Fulfilment.apply(db, current, paid: .init(session), source: "expire_refused", now: now)
            }
            try OperationLog.finish(db, .expireSession, paymentID: payment.paymentID, now: now)
            try answer.record(db, failure: refusal, now: now)
        }
    }
}
