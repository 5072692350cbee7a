import PaymentsStore

extension CheckoutEngine {
    /// A payment that arrived for a checkout already closed (guarantee 5), in the caller's
    /// transaction under the deal's lock: its stock is held again if it is there, and the payment
    /// fulfilled; otherwise nothing is sold, the payment says why, and a full refund is recorded.
    /// Returns that refund's id: it must now be sent (`RefundEngine.send`).
    static func applyLatePayment(
        _ db: Connection, _ payment: PaymentRecord, paymentIntentID: String?, source: String, now: Int64
    ) throws -> String? {
        let quantities = payment.items.reduce(into: [String: Int64]()) { $0[$1.sku, default: 0] += $1.quantity }
        try db.executeScript("SAVEPOINT late_payment")
        do {
            try StockLedger.reserve(db, paymentID: payment.paymentID, quantities: quantities, now: now)
            try db.executeScript("RELEASE late_payment")
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late",
                from: payment.status.name, detail: "stock held again; fulfilled", now: now)
            try Fulfilment.apply(db, payment, paymentIntentID: paymentIntentID, source: source, now: now)
            return nil
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
            return try RefundLedger.insert(
                db, payment, amount: payment.amountTotal, reason: .requestedByCustomer, restock: false,
                cause: "late_payment", caller: nil, now: now)
        }
    }
}
