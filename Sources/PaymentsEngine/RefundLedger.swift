import PaymentsDomain
import PaymentsStore
import StripeClient

/// The refunds of payments and what they do to the payment, its order and its stock
/// (guarantee 7), each function in the caller's transaction under the deal's lock.
///
/// A refund is PENDING until Stripe settles it; only SUCCEEDED refunds count in the
/// payment's `amount_refunded` and move its status, while every refund not FAILED
/// counts against what remains to refund. States only move forward.
enum RefundLedger {

    /// What remains refundable: paid, less every refund that is not FAILED (pending ones included).
    static func remaining(_ db: any Connection, _ payment: PaymentRecord) throws -> Int64 {
        max(0, payment.amountTotal - (try RefundRecord.committedAmount(db, paymentID: payment.paymentID)))
    }

    /// Records a PENDING refund and starts its operation. The insert itself refuses to go past
    /// the amount paid (a trigger), so no read before it can be raced.
    static func insert(
        _ db: any Connection, _ payment: PaymentRecord, amount: Int64, reason: RefundReason?, restock: Bool, cause: String,
        caller: RefundRecord.Caller?, now: Int64
    ) throws -> String {
        let refundID = CheckoutEngine.newID(prefix: "rfd_")
        guard
            try RefundRecord.insertPending(
                db, refundID: refundID, paymentID: payment.paymentID, amount: amount, reason: reason, restock: restock,
                cause: cause, caller: caller, now: now)
        else { throw PaymentsError.refundExceedsRemaining(remaining: try Self.remaining(db, payment)) }
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.requested",
            detail: "refund_id=\(refundID) amount=\(amount) reason=\(reason?.rawValue ?? RefundReason.noneName) cause=\(cause)\(restock ? " restock" : "")",
            now: now)
        try OperationLog.start(
            db, .sendRefund, dealID: payment.dealID, paymentID: payment.paymentID, subject: refundID,
            recoveryPoint: .refundRecorded, detail: refundID, now: now)
        return refundID
    }

    /// Stripe's word on a refund paymentsd sent: its answer to the request, or a later event.
    enum Answer {
        case stripe(RefundObject)
        /// Stripe refused the request (a 4xx): nothing was refunded.
        case rejected(code: String)
    }

    /// Settles a PENDING refund with Stripe's answer; a refund already settled changes no more.
    static func settle(_ db: any Connection, refundID: String, _ answer: Answer, now: Int64) throws {
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
            if status == .failed { failure = object.failureReason ?? object.status?.rawValue ?? "failed" }
        case .rejected(let code):
            status = .failed
            failure = "stripe_rejected" + (code.isEmpty ? "" : ": \(code)")
        }
        switch refund.status {
        case .pending:
            break
        case .succeeded, .failed:
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
        try RefundRecord.settle(
            db, refundID: refundID, status: status, stripeRefundID: stripeRefundID, failureReason: failure, now: now)
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
    static func record(_ db: any Connection, _ payment: PaymentRecord, _ object: RefundObject, now: Int64) throws {
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
        try RefundRecord.insertOutside(
            db, refundID: refundID, paymentID: payment.paymentID, amount: amount, status: status,
            stripeRefundID: object.id, failureReason: status == .failed ? (object.failureReason ?? "failed") : nil,
            now: now)
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.recorded_from_stripe",
            to: status.name, detail: "refund_id=\(refundID) stripe_refund_id=\(object.id) amount=\(amount)", now: now)
        if status == .succeeded { try Self.applySucceeded(db, payment, now: now) }
    }

    private static func status(_ stripeStatus: RefundObject.Status?) -> RefundStatus {
        switch stripeStatus {
        case .succeeded: .succeeded
        case .failed, .canceled: .failed
        case .pending, .requiresAction, nil: .pending  // Stripe settles it later
        }
    }

    /// A refund of `payment` succeeded: its amount refunded, its status, and on a full refund its
    /// order (refunded) and stock (back once, if a refund asked for it).
    private static func applySucceeded(_ db: any Connection, _ stale: PaymentRecord, now: Int64) throws {
        guard let payment = try PaymentRecord.load(db, paymentID: stale.paymentID) else { return }
        let refunded = try RefundRecord.succeededAmount(db, paymentID: payment.paymentID)
        try PaymentRecord.setAmountRefunded(db, paymentID: payment.paymentID, min(refunded, payment.amountTotal), now: now)
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
        case .refunded, .created, .failed:
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "refund.recorded",
                from: payment.status.name, detail: "amount_refunded=\(refunded); status unchanged", now: now)
        }
    }

    /// The order of a fully refunded payment is marked refunded; its stock comes back once when
    /// one of the payment's refunds asked for a restock.
    private static func closeOrder(_ db: any Connection, _ payment: PaymentRecord, now: Int64) throws {
        if try OrderBook.markRefunded(db, paymentID: payment.paymentID, now: now) {
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "order.refunded",
                detail: "order_id=\(payment.orderID ?? "")", now: now)
        }
        guard try RefundRecord.restockWanted(db, paymentID: payment.paymentID),
            try OrderBook.markRestocked(db, paymentID: payment.paymentID, now: now)
        else { return }
        try StockLedger.restock(db, paymentID: payment.paymentID, now: now)
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "stock.restocked",
            detail: "order_id=\(payment.orderID ?? "")", now: now)
    }
}
