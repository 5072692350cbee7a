import PaymentsDomain
import PaymentsStore

extension CheckoutEngine {
    /// A payment that arrived for a checkout already closed (guarantee 5), in the caller's
    /// transaction under the deal's lock: its stock and names are held again if they are there, and the payment
    /// fulfilled; otherwise nothing is sold, the payment says why, and a full refund is recorded.
    /// Returns that refund's id: it must now be sent (`RefundEngine.send`).
    static func applyLatePayment(
        _ db: any Connection, _ payment: PaymentRecord, paid: Fulfilment.Settlement, source: String, now: Int64
    ) throws -> String? {
        let quantities = payment.items.reduce(into: [String: Int64]()) { $0[$1.sku, default: 0] += $1.quantity }
        let gone: String
        do {
            // A refused hold leaves nothing half-held: the savepoint rolls back what it did take.
            try db.savepoint("late_payment") {
                try CheckoutHolds.hold(
                    db, paymentID: payment.paymentID, dealID: payment.dealID, claims: payment.claims,
                    quantities: quantities, now: now)
            }
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late",
                from: payment.status.name, detail: "stock and names held again; fulfilled", now: now)
            try Fulfilment.apply(db, payment, paid: paid, source: source, now: now)
            return nil
        } catch PaymentsError.insufficientStock(let sku) {
            gone = "insufficient_stock sku=\(sku)"
        } catch PaymentsError.claimTaken(let key) {
            gone = "claim_taken key=\(key)"
        }
        // What Stripe charged is refunded: for a subscription only Stripe knows it (its prices').
        try Fulfilment.record(db, payment, paid)
        guard let charged = try PaymentRecord.load(db, paymentID: payment.paymentID)?.amountTotal else { return nil }
        let refundable = charged > 0
        let reason = (refundable ? "late_payment_refunded: " : "late_payment_not_refunded: ") + gone
        try PaymentRecord.setFailureReason(db, paymentID: payment.paymentID, reason, now: now)
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late",
            from: payment.status.name, detail: refundable ? "\(reason); refunding" : reason, now: now)
        guard refundable else { return nil }
        return try RefundLedger.insert(
            db, payment, amount: charged, reason: .requestedByCustomer, restock: false,
            cause: "late_payment", caller: nil, now: now)
    }
}
