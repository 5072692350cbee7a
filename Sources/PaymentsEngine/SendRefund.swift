import PaymentsDomain
import PaymentsStore
import StripeClient

/// Sends a PENDING refund to Stripe and records its answer (guarantee 7): the steps of a refund
/// after its first transaction, for RefundPayment, a retry with the caller's key, a late payment
/// and the janitor's resume alike. A refund already answered is left as it is.
struct SendRefund: OperationSteps {
    /// The steps, in the order they run.
    enum Step: Sendable {
        /// Read the refund and its payment.                                                     (read)
        case load
        /// Past Stripe's 24 h key window: look the refund up among the payment's refunds by the
        /// refund id in its metadata, so it is never sent blindly twice.                        (Stripe)
        case lookUp(RefundRecord, PaymentRecord, paymentIntent: String)
        /// `POST /v1/refunds` under the refund's own idempotency key.                           (Stripe)
        case send(RefundRecord, PaymentRecord, paymentIntent: String)
        /// Stripe's answer is unknown: noted, and retried later under the same key.             (tx)
        case recordUnavailable(StripeError)
        /// Stripe's answer recorded with its effects, the operation finished, the answer stored. (tx)
        case record(RefundLedger.Answer?)
        /// An operation naming no refund: finished, not retried forever.                        (tx)
        case forgetMissing
    }

    let engine: RefundEngine
    let refundID: String
    /// A RefundPayment's answer, stored with Stripe's answer.
    let answer: AnswerRecorder<RefundEngine.Result>?
    let deadline: ContinuousClock.Instant

    func perform(_ step: Step) async throws -> StepOutcome<Step, RefundEngine.Result> {
        let engine = self.engine
        let refundID = self.refundID
        switch step {
        case .load:
            guard
                let (refund, payment) = try await engine.store.read({ db -> (RefundRecord, PaymentRecord)? in
                    guard let refund = try RefundRecord.load(db, refundID: refundID) else { return nil }
                    return (refund, try PaymentRecord.load(db, paymentID: refund.paymentID)!)
                })
            else { return .next(.forgetMissing, crashPoint: nil) }
            guard refund.status == .pending, refund.stripeRefundID == nil, refund.origin == .paymentsd else {
                return .next(.record(nil), crashPoint: nil)
            }
            guard let paymentIntentID = payment.paymentIntentID else {
                // Nothing was charged that Stripe knows of: there is nothing to give back.
                return .next(.record(.rejected(code: "no_payment_intent")), crashPoint: nil)
            }
            if engine.now() - refund.createdAt >= RefundEngine.keyWindow {
                return .next(.lookUp(refund, payment, paymentIntent: paymentIntentID), crashPoint: nil)
            }
            return .next(.send(refund, payment, paymentIntent: paymentIntentID), crashPoint: nil)

        case .lookUp(let refund, let payment, let paymentIntentID):
            do {
                let found = try await engine.stripe.listRefunds(paymentIntent: paymentIntentID, deadline: self.deadline)
                    .first(where: { $0.paymentsdRefundID == refundID })
                guard let found else {
                    return .next(.send(refund, payment, paymentIntent: paymentIntentID), crashPoint: nil)
                }
                return .next(.record(.stripe(found)), crashPoint: "refund_payment.stripe_answered")
            } catch StripeError.rejected(_, _, let code, _) {
                return .next(.record(.rejected(code: code)), crashPoint: "refund_payment.stripe_answered")
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }

        case .send(let refund, let payment, let paymentIntentID):
            do {
                let object = try await engine.stripe.createRefund(
                    StripeRequests.refund(refund, of: payment, paymentIntent: paymentIntentID),
                    idempotencyKey: "paymentsd-\(refundID)-refund", deadline: self.deadline)
                engine.logger.notice("refund answered by Stripe", metadata: ["refund_id": "\(refundID)"])
                return .next(.record(.stripe(object)), crashPoint: "refund_payment.stripe_answered")
            } catch StripeError.rejected(_, _, let code, _) {
                return .next(.record(.rejected(code: code)), crashPoint: "refund_payment.stripe_answered")
            } catch let error as StripeError {
                return .next(.recordUnavailable(error), crashPoint: nil)
            }

        case .recordUnavailable(let error):
            engine.logger.warning(
                "Stripe call failed; the refund stays pending", metadata: ["refund_id": "\(refundID)", "error": "\(error)"])
            try await engine.store.write { db in
                try OperationLog.recordFailure(
                    db, .sendRefund, paymentID: "", subject: refundID, error: "\(error)", now: engine.now())
            }
            throw PaymentsError.stripeUnavailable

        case .record(let stripeAnswer):
            return .finished(
                try await engine.store.write { db in
                    let now = engine.now()
                    if let stripeAnswer { try RefundLedger.settle(db, refundID: refundID, stripeAnswer, now: now) }
                    guard let refund = try RefundRecord.load(db, refundID: refundID),
                        let payment = try PaymentRecord.load(db, paymentID: refund.paymentID)
                    else { preconditionFailure("refund \(refundID) was read before this step; refunds are never deleted") }
                    try OperationLog.finish(db, .sendRefund, paymentID: refund.paymentID, subject: refundID, now: now)
                    let result = RefundEngine.Result(refund: refund, payment: payment)
                    try self.answer.record(db, result, now: now)
                    return result
                })

        case .forgetMissing:
            try await engine.store.write { db in
                try OperationLog.finish(db, .sendRefund, paymentID: "", subject: refundID, now: engine.now())
            }
            throw PaymentsError.paymentNotFound(refundID)
        }
    }
}
