import Logging
import PaymentsStore
import PaymentsWire
import StripeClient

#if canImport(Glibc)
import Glibc
#endif

/// Takes Stripe's webhook events: stores each under its event id before the
/// caller is answered, then applies it under its deal's lock, at most once
/// (guarantee 10). Fulfilment goes through `Fulfilment`, the one path shared
/// with ConfirmCheckout and cancels that find a session paid (guarantee 4).
public final class EventInbox: Sendable {
    public enum Outcome: Sendable, Equatable {
        case applied
        case duplicate
        case ignored
    }

    private let store: Store
    private let checkout: CheckoutEngine
    private let locks: KeyedLockTable<String>
    private let logger: Logger
    private let now: @Sendable () -> Int64

    public init(
        store: Store, checkout: CheckoutEngine, locks: KeyedLockTable<String>, logger: Logger,
        now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) }
    ) {
        self.store = store
        self.checkout = checkout
        self.locks = locks
        self.logger = logger
        self.now = now
    }

    /// Stores a verified event and applies it now when its deal's lock can be had before `deadline`;
    /// otherwise it stays pending for the janitor. A repeated event id is a duplicate.
    public func receive(_ event: StripeEventSummary, deadline: ContinuousClock.Instant) async throws -> Outcome {
        let now = self.now()
        let stored: Bool = try await self.store.write { db in
            try db.query(
                """
                INSERT INTO stripe_events (event_id, type, created, object_id, deal_id, payment_id, object_status,
                    payment_status, payment_intent_id, subscription_id, amount_total, state, received_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?) ON CONFLICT (event_id) DO NOTHING
                """,
                arguments: [
                    event.eventID, event.type, event.created, event.objectID, event.dealID, event.paymentID,
                    event.objectStatus, event.paymentStatus, event.paymentIntentID, event.subscriptionID,
                    event.amountTotal, now,
                ])
            guard db.changes == 1 else { return false }
            for refund in event.refunds {
                try db.query(
                    """
                    INSERT INTO stripe_event_refunds (event_id, stripe_refund_id, amount, status, refund_id, failure_reason)
                    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                    """, event.eventID, refund.id, refund.amount ?? 0, refund.status ?? "", refund.paymentsdRefundID,
                    refund.failureReason)
            }
            return true
        }
        guard stored else { return .duplicate }
        CrashPoints.reach("stripe_event.stored")
        do {
            return try await self.apply(eventID: event.eventID, deadline: deadline)
        } catch {
            // Stored: the janitor applies it later. The delivery itself is accepted.
            self.logger.warning(
                "event stored, applying it later", metadata: ["event_id": "\(event.eventID)", "error": "\(error)"])
            return .applied
        }
    }

    /// Applies every pending event (janitor, start-up); returns how many it settled.
    @discardableResult
    public func applyPending(timeout: Duration = .seconds(30)) async -> Int {
        let pending = (try? await self.store.read { db in
            try db.query("SELECT event_id FROM stripe_events WHERE state = 'PENDING' ORDER BY received_at, event_id")
                .map { $0.string(0) }
        }) ?? []
        var settled = 0
        for eventID in pending {
            if (try? await self.apply(eventID: eventID, deadline: .now + timeout)) != nil { settled += 1 }
        }
        return settled
    }

    private func apply(eventID: String, deadline: ContinuousClock.Instant) async throws -> Outcome {
        guard let dealID = try await self.store.read({ try Self.dealOf(eventID, $0) }) else {
            try await self.store.write { db in
                try Self.settle(db, eventID, state: "IGNORED", note: "no payment of paymentsd", now: self.now())
            }
            return .ignored
        }
        return try await self.locks.withDealLock(dealID, deadline: deadline) {
            let (outcome, refund) = try await self.store.write { db in try self.applyLocked(db, eventID: eventID) }
            if let refund {
                // The money goes back in its own step; if Stripe cannot be reached now the
                // janitor resumes the refund operation, and the event stays applied.
                try? await self.checkout.refunds.send(refundID: refund, deadline: deadline)
            }
            return outcome
        }
    }

    /// The deal an event belongs to: by the payment id in the session's metadata, its session, or its payment intent.
    private static func dealOf(_ eventID: String, _ db: Connection) throws -> String? {
        guard
            let row = try db.queryFirst(
                "SELECT payment_id, object_id, payment_intent_id FROM stripe_events WHERE event_id = ?", eventID)
        else { return nil }
        return try Self.payment(db, paymentID: row.optionalString(0), objectID: row.string(1), paymentIntentID: row.optionalString(2))?
            .dealID
    }

    private static func payment(_ db: Connection, paymentID: String?, objectID: String, paymentIntentID: String?) throws
        -> PaymentRecord?
    {
        if let paymentID, let payment = try PaymentRecord.load(db, paymentID: paymentID) { return payment }
        if let row = try db.queryFirst("SELECT payment_id FROM payments WHERE checkout_session_id = ?", objectID) {
            return try PaymentRecord.load(db, paymentID: row.string(0))
        }
        if let paymentIntentID,
            let row = try db.queryFirst("SELECT payment_id FROM payments WHERE payment_intent_id = ?", paymentIntentID)
        {
            return try PaymentRecord.load(db, paymentID: row.string(0))
        }
        return nil
    }

    /// One event, in one transaction under its deal's lock. States only move forward: an event
    /// that would move a payment back is recorded and changes nothing.
    private func applyLocked(_ db: Connection, eventID: String) throws -> (Outcome, refund: String?) {
        let now = self.now()
        guard
            let row = try db.queryFirst(
                """
                SELECT type, object_id, payment_id, payment_status, payment_intent_id, state, subscription_id,
                    object_status, amount_total
                FROM stripe_events WHERE event_id = ?
                """, eventID), row.string(5) == "PENDING"
        else { return (.duplicate, nil) }
        let type = row.string(0)
        guard
            let payment = try Self.payment(
                db, paymentID: row.optionalString(2), objectID: row.string(1), paymentIntentID: row.optionalString(4))
        else {
            try Self.settle(db, eventID, state: "IGNORED", note: "no payment of paymentsd", now: now)
            return (.ignored, nil)
        }
        let note: String
        var refund: String? = nil
        switch type {
        case "checkout.session.completed" where row.optionalString(3) == "paid",
            "checkout.session.async_payment_succeeded":
            let paid = Fulfilment.Settlement(
                paymentIntentID: row.optionalString(4), subscriptionID: row.optionalString(6),
                amountTotal: row.optionalInt64(8))
            (note, refund) = try self.fulfil(db, payment, paid: paid, source: type, now: now)
        case "checkout.session.completed":
            note = "completed, payment not yet settled (asynchronous method)"
            try AuditLog.append(db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "checkout.completed_unpaid", now: now)
        case "checkout.session.async_payment_failed":
            note = try self.close(db, payment, to: .failed, kind: "checkout.async_payment_failed", now: now)
        case "checkout.session.expired":
            note = try self.close(db, payment, to: .expired, kind: "checkout.expired", now: now)
        case "charge.refunded", "refund.created", "refund.updated", "refund.failed":
            // Refunds paymentsd sent are settled; ones made at Stripe (the dashboard) recorded, once each.
            let refunds = try db.query(
                """
                SELECT stripe_refund_id, amount, status, refund_id, failure_reason FROM stripe_event_refunds
                WHERE event_id = ? ORDER BY rowid
                """, eventID)
            for refund in refunds {
                try RefundLedger.record(
                    db, payment,
                    RefundObject(
                        id: refund.string(0), amount: refund.int64(1), status: refund.string(2),
                        failureReason: refund.optionalString(4), paymentsdRefundID: refund.optionalString(3)),
                    now: now)
            }
            note = "refunds named: \(refunds.count)"
        case _ where type.hasPrefix("customer.subscription."):
            // The subscription's later life is Stripe's to manage; it is recorded for the deal.
            note = "subscription event recorded"
            if let subscriptionID = row.optionalString(6) {
                try db.query(
                    "UPDATE payments SET subscription_id = coalesce(subscription_id, ?) WHERE payment_id = ?",
                    subscriptionID, payment.paymentID)
            }
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "stripe.\(type)",
                detail: "subscription_id=\(row.optionalString(6) ?? "") status=\(row.optionalString(7) ?? "")", now: now)
        default:
            try Self.settle(db, eventID, state: "IGNORED", note: "type not acted on", now: now)
            return (.ignored, nil)
        }
        try Self.settle(db, eventID, state: "APPLIED", note: note, now: now)
        return (.applied, refund)
    }

    /// Returns a note for the inbox, and the refund to send when a late payment found no stock.
    private func fulfil(
        _ db: Connection, _ payment: PaymentRecord, paid: Fulfilment.Settlement, source: String, now: Int64
    ) throws -> (String, String?) {
        switch payment.status {
        case .created:
            try Fulfilment.apply(db, payment, paid: paid, source: source, now: now)
            return ("fulfilled", nil)
        case .paid, .partiallyRefunded, .refunded:
            return ("already fulfilled", nil)
        case .failed:
            // Stripe said this payment failed; a success for it contradicts that. States only move
            // forward: recorded for the operator, nothing changes.
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "payment.late",
                from: payment.status.name, detail: "success after a failure: recorded, nothing changed", now: now)
            self.logger.error("a success arrived for a failed payment", metadata: ["payment_id": "\(payment.paymentID)"])
            return ("late: payment is FAILED, nothing changed", nil)
        case .expired, .canceled:
            // Paid at Stripe after paymentsd closed the checkout (guarantee 5).
            self.logger.warning("payment arrived for a closed checkout", metadata: ["payment_id": "\(payment.paymentID)"])
            let refundID = try CheckoutEngine.applyLatePayment(db, payment, paid: paid, source: source, now: now)
            return refundID == nil ? ("late payment fulfilled", nil) : ("late payment, stock gone: refunding", refundID)
        case .unspecified:
            preconditionFailure("a stored payment has no status")
        }
    }

    private func close(_ db: Connection, _ payment: PaymentRecord, to status: PaymentStatus, kind: String, now: Int64)
        throws -> String
    {
        guard payment.status == .created else {
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "\(kind).late",
                from: payment.status.name, detail: "changes nothing", now: now)
            return "late: payment is \(payment.status.name)"
        }
        try PaymentRecord.transition(db, payment, to: status, kind: kind, now: now)
        try CheckoutHolds.release(db, paymentID: payment.paymentID, now: now)
        return "closed"
    }

    private static func settle(_ db: Connection, _ eventID: String, state: String, note: String, now: Int64) throws {
        try db.query(
            "UPDATE stripe_events SET state = ?, note = ?, applied_at = ? WHERE event_id = ?", state, note, now, eventID)
    }
}
