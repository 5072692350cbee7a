import PaymentsStore
import PaymentsWire
import StripeClient

/// The refunds of payments and what they do to the payment, its order and its stock
/// (guarantee 7), each function in the caller's transaction under the deal's lock.
///
/// A refund is PENDING until Stripe settles it; only SUCCEEDED refunds count in the
/// payment's `amount_refunded` and move its status, while every refund not FAILED
/// counts against what remains to refund. States only move forward.
enum RefundLedger {
    /// Who asked, when a RefundPayment call did: a retry with the same key finds its refund.
    struct Caller: Sendable {
        let uid: UInt32
        let key: String
        let requestHash: [UInt8]
    }

    /// What remains refundable: paid, less every refund that is not FAILED (pending ones included).
    static func remaining(_ db: Connection, _ payment: PaymentRecord) throws -> Int64 {
        let committed = try db.queryFirst(
            "SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = ? AND status <> 'FAILED'", payment.paymentID)!
            .int64(0)
        return max(0, payment.amountTotal - committed)
    }

    /// Records a PENDING refund and starts its operation. The insert itself refuses to go past
    /// the amount paid (a trigger), so no read before it can be raced.
    static func insert(
        _ db: Connection, _ payment: PaymentRecord, amount: Int64, reason: RefundReason, restock: Bool, cause: String,
        caller: Caller?, now: Int64
    ) throws -> String {
        let refundID = CheckoutEngine.newID(prefix: "rfd_")
        do {
            try db.query(
                """
                INSERT INTO refunds (refund_id, payment_id, amount, status, reason, restock, origin, cause, caller_uid,
                    request_key, request_hash, created_at, updated_at)
                VALUES (?, ?, ?, 'PENDING', ?, ?, 'PAYMENTSD', ?, ?, ?, ?, ?, ?)
                """,
                arguments: [
                    refundID, payment.paymentID, amount, reason.name, restock ? 1 : 0, cause,
                    caller.map { Int64($0.uid) }, caller?.key, caller.map { SQLValue.blob($0.requestHash) }, now, now,
                ])
        } catch let error as SQLiteError where error.message.contains("refund_exceeds_remaining") {
            throw PaymentsError.refundExceedsRemaining(remaining: try Self.remaining(db, payment))
        }
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.requested",
            detail: "refund_id=\(refundID) amount=\(amount) reason=\(reason.name) cause=\(cause)\(restock ? " restock" : "")",
            now: now)
        try OperationLog.start(
            db, .sendRefund, dealID: payment.dealID, paymentID: payment.paymentID, subject: refundID,
            recoveryPoint: "refund_recorded", detail: refundID, now: now)
        return refundID
    }

    /// Stripe's word on a refund paymentsd sent: its answer to the request, or a later event.
    enum Answer {
        case stripe(RefundObject)
        /// Stripe refused the request (a 4xx): nothing was refunded.
        case rejected(code: String)
    }

    /// Settles a PENDING refund with Stripe's answer; a refund already settled changes no more.
    static func settle(_ db: Connection, refundID: String, _ answer: Answer, now: Int64) throws {
        guard let refund = try RefundRecord.load(db, refundID: refundID),
            let payment = try PaymentRecord.load(db, paymentID: refund.paymentID)
        else { return }
        let status: RefundStatus
        var stripeRefundID: String? = nil
        var failure: String? = nil
        switch answer {
        case .stripe(let object):
            status = Self.status(object.status)
            stripeRefundID = object.id
            if status == .failed { failure = object.failureReason ?? object.status ?? "failed" }
        case .rejected(let code):
            status = .failed
            failure = "stripe_rejected" + (code.isEmpty ? "" : ": \(code)")
        }
        switch refund.status {
        case .pending:
            break
        case .succeeded, .failed, .unspecified:
            if status != refund.status {
                // Stripe changed its mind after the fact (a succeeded refund can still fail at the bank):
                // recorded for the operator; the ledger only moves forward.
                try AuditLog.append(
                    db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.late_update",
                    from: refund.status.name, to: status.name, detail: "refund_id=\(refundID) changes nothing", now: now)
            }
            return
        }
        guard status != .pending || (refund.stripeRefundID == nil && stripeRefundID != nil) else { return }
        try db.query(
            """
            UPDATE refunds SET status = ?, stripe_refund_id = coalesce(stripe_refund_id, ?), failure_reason = ?,
                updated_at = ?
            WHERE refund_id = ?
            """, status.name, stripeRefundID, failure, now, refundID)
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.\(status.name.lowercased())",
            from: refund.status.name, to: status.name,
            detail: "refund_id=\(refundID) amount=\(refund.amount)"
                + (stripeRefundID.map { " stripe_refund_id=\($0)" } ?? "") + (failure.map { " failure=\($0)" } ?? ""),
            now: now)
        if status == .succeeded { try Self.applySucceeded(db, payment, now: now) }
    }

    /// A refund named by a Stripe event: one paymentsd sent is settled; one made elsewhere
    /// (the dashboard) is recorded as it is, once per Stripe refund id.
    static func record(_ db: Connection, _ payment: PaymentRecord, _ object: RefundObject, now: Int64) throws {
        if let known = try RefundRecord.load(db, stripeRefundID: object.id) {
            try Self.settle(db, refundID: known.refundID, .stripe(object), now: now)
            return
        }
        if let refundID = object.paymentsdRefundID, let ours = try RefundRecord.load(db, refundID: refundID),
            ours.paymentID == payment.paymentID
        {
            try Self.settle(db, refundID: ours.refundID, .stripe(object), now: now)
            return
        }
        guard let amount = object.amount, amount > 0 else { return }
        let status = Self.status(object.status)
        let refundID = CheckoutEngine.newID(prefix: "rfd_")
        try db.query(
            """
            INSERT INTO refunds (refund_id, payment_id, amount, status, reason, origin, cause, stripe_refund_id,
                failure_reason, created_at, updated_at)
            VALUES (?, ?, ?, ?, 'UNSPECIFIED', 'STRIPE', 'outside', ?, ?, ?, ?)
            """,
            arguments: [
                refundID, payment.paymentID, amount, status.name, object.id,
                status == .failed ? (object.failureReason ?? "failed") : nil, now, now,
            ])
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.recorded_from_stripe",
            to: status.name, detail: "refund_id=\(refundID) stripe_refund_id=\(object.id) amount=\(amount)", now: now)
        if status == .succeeded { try Self.applySucceeded(db, payment, now: now) }
    }

    private static func status(_ stripeStatus: String?) -> RefundStatus {
        switch stripeStatus {
        case "succeeded": .succeeded
        case "failed", "canceled": .failed
        default: .pending  // pending, requires_action: Stripe settles it later
        }
    }

    /// A refund of `payment` succeeded: its amount refunded, its status, and on a full refund its
    /// order (refunded) and stock (back once, if a refund asked for it).
    private static func applySucceeded(_ db: Connection, _ stale: PaymentRecord, now: Int64) throws {
        guard let payment = try PaymentRecord.load(db, paymentID: stale.paymentID) else { return }
        let refunded = try db.queryFirst(
            "SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = ? AND status = 'SUCCEEDED'",
            payment.paymentID)!.int64(0)
        try db.query(
            "UPDATE payments SET amount_refunded = ?, updated_at = ? WHERE payment_id = ?",
            min(refunded, payment.amountTotal), now, payment.paymentID)
        let full = refunded >= payment.amountTotal
        switch payment.status {
        case .paid, .partiallyRefunded:
            let next: PaymentStatus = full ? .refunded : .partiallyRefunded
            if next != payment.status {
                try PaymentRecord.transition(
                    db, payment, to: next, kind: full ? "payment.refunded" : "payment.partially_refunded",
                    detail: "amount_refunded=\(refunded)", now: now)
            }
            if full { try Self.closeOrder(db, payment, now: now) }
        case .expired, .canceled:
            // A late payment (guarantee 5): the money goes back, the checkout stays closed.
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late_refunded",
                detail: "amount_refunded=\(refunded)", now: now)
        case .refunded, .created, .failed, .unspecified:
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.recorded",
                from: payment.status.name, detail: "amount_refunded=\(refunded); status unchanged", now: now)
        }
    }

    /// The order of a fully refunded payment is marked refunded; its stock comes back once when
    /// one of the payment's refunds asked for a restock.
    private static func closeOrder(_ db: Connection, _ payment: PaymentRecord, now: Int64) throws {
        try db.query("UPDATE orders SET refunded_at = ? WHERE payment_id = ? AND refunded_at IS NULL", now, payment.paymentID)
        if db.changes == 1 {
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "order.refunded",
                detail: "order_id=\(payment.orderID ?? "")", now: now)
        }
        let wanted = try db.queryFirst(
            "SELECT 1 FROM refunds WHERE payment_id = ? AND restock = 1 AND status <> 'FAILED'", payment.paymentID) != nil
        guard wanted else { return }
        try db.query(
            "UPDATE orders SET restocked_at = ? WHERE payment_id = ? AND restocked_at IS NULL", now, payment.paymentID)
        guard db.changes == 1 else { return }
        try StockLedger.restock(db, paymentID: payment.paymentID, now: now)
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "stock.restocked",
            detail: "order_id=\(payment.orderID ?? "")", now: now)
    }
}
