import PaymentsStore
import StripeClient

extension CheckoutEngine {
    /// A payment that arrived for a checkout already closed (guarantee 5), in the caller's
    /// transaction under the deal's lock: its stock is held again if it is there, and the payment
    /// fulfilled; otherwise nothing is sold, the payment says why, and a refund operation starts.
    /// Returns whether a refund must now be sent (`refundLatePayment`).
    static func applyLatePayment(
        _ db: Connection, _ payment: PaymentRecord, paymentIntentID: String?, source: String, now: Int64
    ) throws -> Bool {
        let quantities = payment.items.reduce(into: [String: Int64]()) { $0[$1.sku, default: 0] += $1.quantity }
        try db.executeScript("SAVEPOINT late_payment")
        do {
            try StockLedger.reserve(db, paymentID: payment.paymentID, quantities: quantities, now: now)
            try db.executeScript("RELEASE late_payment")
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late",
                from: payment.status.name, detail: "stock held again; fulfilled", now: now)
            try Fulfilment.apply(db, payment, paymentIntentID: paymentIntentID, source: source, now: now)
            return false
        } catch PaymentsError.insufficientStock(let sku) {
            try db.executeScript("ROLLBACK TO late_payment; RELEASE late_payment")
            let reason = "late_payment_refunded: insufficient_stock sku=\(sku)"
            try db.query(
                """
                UPDATE payments SET failure_reason = ?, payment_intent_id = coalesce(?, payment_intent_id), updated_at = ?
                WHERE payment_id = ?
                """, reason, paymentIntentID, now, payment.paymentID)
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late",
                from: payment.status.name, detail: "\(reason); refunding", now: now)
            try OperationLog.start(
                db, .refundLatePayment, dealID: payment.dealID, paymentID: payment.paymentID,
                recoveryPoint: "refund_requested", now: now)
            return true
        }
    }

    /// Refunds a late payment in full at Stripe, with an idempotency key from the payment, and
    /// records it. Called under the deal's lock; resumed by the janitor if Stripe cannot be reached.
    public func refundLatePayment(paymentID: String, deadline: ContinuousClock.Instant) async throws {
        guard let payment = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }),
            let paymentIntentID = payment.paymentIntentID
        else {
            try await self.store.write { try OperationLog.finish($0, .refundLatePayment, paymentID: paymentID, now: self.now()) }
            return
        }
        var form = FormParameters()
        form.add("payment_intent", paymentIntentID)
        form.add("reason", "requested_by_customer")
        form.add("metadata[payment_id]", paymentID)
        form.add("metadata[deal_id]", payment.dealID)
        form.add("metadata[cause]", "late_payment")
        let refund: RefundObject
        do {
            refund = try await self.stripe.createRefund(
                form, idempotencyKey: "paymentsd-\(paymentID)-late-refund", deadline: deadline)
        } catch let error as StripeError {
            try await self.recordFailure(.refundLatePayment, paymentID: paymentID, error: error)
            throw PaymentsError.stripeUnavailable
        }
        try await self.store.write { db in
            let now = self.now()
            try db.query(
                "UPDATE payments SET amount_refunded = amount_total, updated_at = ? WHERE payment_id = ?", now, paymentID)
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: paymentID, kind: "payment.late_refunded",
                detail: "stripe_refund_id=\(refund.id) status=\(refund.status ?? "")", now: now)
            try OperationLog.finish(db, .refundLatePayment, paymentID: paymentID, now: now)
        }
        self.logger.notice("refunded a late payment", metadata: ["payment_id": "\(paymentID)"])
    }
}
