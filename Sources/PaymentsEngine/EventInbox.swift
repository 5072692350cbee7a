import Logging
import PaymentsDomain
import PaymentsStore
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
        /// Stored durably, not applied yet: its deal's lock could not be had in time, applying it
        /// failed, or its payment is not known yet. The janitor applies it later.
        case queued
    }

    /// How long a refund or charge event whose payment intent no payment has recorded yet waits
    /// for it (the completion that records it may itself be late) before it is set aside as not
    /// paymentsd's. Stripe retries a delivery for three days.
    static let unmatchedPatience: Int64 = 3 * 86_400

    private let store: Store
    private let checkout: CheckoutEngine
    private let locks: KeyedLockTable<String>
    private let logger: Logger
    private let now: @Sendable () -> Int64

    init(
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
    ///
    /// A redelivery is recognised by a read, without a write. A new event whose deal's lock is free
    /// is stored and applied in one transaction, so it costs one durable commit; when the lock is
    /// taken (another command on the deal runs), or that transaction fails, the event is first
    /// stored on its own, so that it is durable before the delivery is answered, and applied after.
    public func receive(_ event: StripeEventSummary, deadline: ContinuousClock.Instant) async throws -> Outcome {
        let arrival = Arrival(event, receivedAt: self.now())
        let (known, dealID) = try await self.store.read { db in
            (try StripeEventInbox.isStored(db, eventID: event.eventID), try Self.payment(db, arrival.event)?.dealID)
        }
        if known { return .duplicate }
        if let dealID {
            do {
                let outcome = try await self.locks.withDealLockIfFree(dealID) {
                    try await self.applyHoldingLock(eventID: event.eventID, dealID: dealID, storing: arrival, deadline: deadline)
                }
                if let outcome { return outcome }
            } catch {
                // Its one transaction rolled back, so nothing of the event is stored yet.
                self.logger.warning(
                    "event not applied on arrival, storing it alone", metadata: ["event_id": "\(event.eventID)", "error": "\(error)"])
            }
        }
        guard try await self.store.write({ db in try arrival.insert(db) }) else { return .duplicate }
        CrashPoints.reach("stripe_event.stored")
        do {
            return try await self.apply(eventID: event.eventID, deadline: deadline)
        } catch {
            // Stored: the janitor applies it later. The delivery itself is accepted, and said to be queued.
            self.logger.warning(
                "event stored, applying it later", metadata: ["event_id": "\(event.eventID)", "error": "\(error)"])
            return .queued
        }
    }

    /// A new event's inbox row, as `receive` stores it.
    struct Arrival: Sendable {
        let event: StripeEventInbox.Event
        let refunds: [StripeEventInbox.NamedRefund]
        let receivedAt: Int64

        init(_ event: StripeEventSummary, receivedAt: Int64) {
            self.event = StripeEventInbox.Event(
                eventID: event.eventID, type: event.type, created: event.created, objectID: event.objectID,
                dealID: event.dealID, paymentID: event.paymentID, objectStatus: event.objectStatus,
                paymentStatus: event.paymentStatus, paymentIntentID: event.paymentIntentID,
                subscriptionID: event.subscriptionID, amountTotal: event.amountTotal)
            self.refunds = event.refunds.map {
                StripeEventInbox.NamedRefund(
                    stripeRefundID: $0.id, amount: $0.amount ?? 0, status: $0.status?.rawValue ?? "",
                    refundID: $0.paymentsdRefundID, failureReason: $0.failureReason)
            }
            self.receivedAt = receivedAt
        }

        /// Stores the row, PENDING; false when its id is stored already (a redelivery that raced this one).
        func insert(_ db: any Connection) throws -> Bool {
            try StripeEventInbox.insert(db, self.event, refunds: self.refunds, now: self.receivedAt)
        }
    }

    /// Applies every pending event (janitor, start-up); returns how many it settled.
    @discardableResult
    public func applyPending(timeout: Duration = .seconds(30)) async -> Int {
        let pending = (try? await self.store.read { try StripeEventInbox.pendingIDs($0) }) ?? []
        var settled = 0
        for eventID in pending {
            switch try? await self.apply(eventID: eventID, deadline: .now + timeout) {
            case .applied, .duplicate, .ignored: settled += 1
            case .queued, nil: break
            }
        }
        return settled
    }

    private func apply(eventID: String, deadline: ContinuousClock.Instant) async throws -> Outcome {
        switch try await self.store.read({ try Self.dealOf(eventID, $0) }) {
        case .deal(let dealID):
            return try await self.locks.withDealLock(dealID, deadline: deadline) {
                try await self.applyHoldingLock(eventID: eventID, dealID: dealID, storing: nil, deadline: deadline)
            }
        case .notYetKnown(let receivedAt) where receivedAt > self.now() - Self.unmatchedPatience:
            return .queued
        case .notYetKnown, .none:
            try await self.store.write { db in
                try StripeEventInbox.settle(
                    db, eventID: eventID, .ignored, note: StripeEventInbox.orphanNote, now: self.now())
            }
            return .ignored
        }
    }

    /// One event under its deal's lock (`ApplyEvent`, storing it first in the same transaction when
    /// `storing` is given), then the events that waited for this payment's intent to be known (a
    /// refund made before its completion was applied), under the lock already held.
    private func applyHoldingLock(
        eventID: String, dealID: String, storing: Arrival?, deadline: ContinuousClock.Instant
    ) async throws -> Outcome {
        let outcome = try await OperationRunner.run(
            ApplyEvent(inbox: self, eventID: eventID, storing: storing, deadline: deadline), from: .apply)
        // Their own failure leaves them pending for the janitor; this event's outcome stands (and
        // has been committed: nothing after this point may undo or hide it).
        let waiting = (try? await self.store.read { try StripeEventInbox.pendingForPaymentIntents($0, dealID: dealID) }) ?? []
        for other in waiting {
            _ = try? await OperationRunner.run(
                ApplyEvent(inbox: self, eventID: other, storing: nil, deadline: deadline), from: .apply)
        }
        return outcome
    }

    /// The application of a stored event, as steps; its recovery point is the inbox row's state
    /// (PENDING until the `apply` transaction settles it).
    struct ApplyEvent: OperationSteps {
        enum Step: Sendable {
            /// The event's effect and its settlement (APPLIED, IGNORED), in one transaction; with
            /// the event's inbox row first when it arrives now.                                   (tx)
            case apply
            /// A late payment whose stock is gone is refunded in full (`SendRefund`).              (Stripe)
            case sendLateRefund(refundID: String, outcome: Outcome)
        }

        let inbox: EventInbox
        let eventID: String
        /// The inbox row to store in the `apply` transaction; nil when it is stored already.
        let storing: Arrival?
        let deadline: ContinuousClock.Instant

        func perform(_ step: Step) async throws -> StepOutcome<Step, Outcome> {
            switch step {
            case .apply:
                let (outcome, refund) = try await self.inbox.store.write { db in
                    if let storing = self.storing, try !storing.insert(db) { return (Outcome.duplicate, String?.none) }
                    return try self.inbox.applyLocked(db, eventID: self.eventID)
                }
                // The event is stored (and here applied too): the same point a crash tests on the
                // path that stores it alone.
                if self.storing != nil { CrashPoints.reach("stripe_event.stored") }
                guard let refund else { return .finished(outcome) }
                return .next(.sendLateRefund(refundID: refund, outcome: outcome), crashPoint: nil)
            case .sendLateRefund(let refundID, let outcome):
                // The money goes back in its own operation; if Stripe cannot be reached now the
                // janitor resumes it, and the event stays applied.
                _ = try? await self.inbox.checkout.refunds.send(refundID: refundID, deadline: self.deadline)
                return .finished(outcome)
            }
        }
    }

    /// Whether a completed session's payment status ends the checkout: paid, or nothing to pay (a
    /// 100%-off code, a trial); `unpaid` waits for the asynchronous result.
    private static func isSettled(_ paymentStatus: String?) -> Bool {
        switch paymentStatus.flatMap(CheckoutSession.PaymentStatus.init(rawValue:)) {
        case .paid, .noPaymentRequired: true
        case .unpaid, nil: false
        }
    }

    /// Whose an event is, as far as the database knows now.
    private enum Owner {
        case deal(String)
        /// A refund or charge event naming a payment intent that no payment has recorded yet: its
        /// payment's completion may not have been applied yet. It waits (pending) for it.
        case notYetKnown(receivedAt: Int64)
    }

    /// The deal an event belongs to: by the payment id in the session's metadata, its session, or its
    /// payment intent. Nil when it cannot be paymentsd's (a session no payment has).
    private static func dealOf(_ eventID: String, _ db: any Connection) throws -> Owner? {
        guard let event = try StripeEventInbox.load(db, eventID: eventID) else { return nil }
        if let payment = try Self.payment(db, event) { return .deal(payment.dealID) }
        return Self.waitsForPaymentIntent(type: event.type, paymentIntentID: event.paymentIntentID)
            ? .notYetKnown(receivedAt: event.receivedAt) : nil
    }

    /// Refund and charge events find their payment by its payment intent, which is recorded only
    /// when the payment's completion is applied.
    private static func waitsForPaymentIntent(type: String, paymentIntentID: String?) -> Bool {
        paymentIntentID != nil && (type.hasPrefix("refund.") || type.hasPrefix("charge."))
    }

    /// The event's payment: by the payment id in its object's metadata, its session, or its payment intent.
    private static func payment(_ db: any Connection, _ event: StripeEventInbox.Event) throws -> PaymentRecord? {
        if let paymentID = event.paymentID, let payment = try PaymentRecord.load(db, paymentID: paymentID) {
            return payment
        }
        if let payment = try PaymentRecord.load(db, checkoutSessionID: event.objectID) { return payment }
        if let paymentIntentID = event.paymentIntentID {
            return try PaymentRecord.load(db, paymentIntentID: paymentIntentID)
        }
        return nil
    }

    /// One event, in one transaction under its deal's lock. States only move forward: an event
    /// that would move a payment back is recorded and changes nothing.
    fileprivate func applyLocked(_ db: any Connection, eventID: String) throws -> (Outcome, refund: String?) {
        let now = self.now()
        guard let event = try StripeEventInbox.load(db, eventID: eventID), event.isPending else { return (.duplicate, nil) }
        let type = event.type
        guard let payment = try Self.payment(db, event) else {
            // Its payment was found before the lock was taken, and payments are never deleted; should
            // that ever change, the event stays pending rather than being dropped.
            return (.queued, nil)
        }
        let note: String
        var refund: String? = nil
        switch type {
        case "checkout.session.completed" where Self.isSettled(event.paymentStatus), "checkout.session.async_payment_succeeded":
            let paid = Fulfilment.Settlement(
                paymentIntentID: event.paymentIntentID, subscriptionID: event.subscriptionID,
                amountTotal: event.amountTotal)
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
            let refunds = try StripeEventInbox.refunds(db, eventID: eventID)
            for refund in refunds {
                try RefundLedger.record(
                    db, payment,
                    RefundObject(
                        id: refund.stripeRefundID, amount: refund.amount,
                        status: RefundObject.Status(rawValue: refund.status),
                        failureReason: refund.failureReason, paymentsdRefundID: refund.refundID),
                    now: now)
            }
            note = "refunds named: \(refunds.count)"
        case _ where type.hasPrefix("customer.subscription."):
            // The subscription's later life is Stripe's to manage; it is recorded for the deal.
            note = "subscription event recorded"
            if let subscriptionID = event.subscriptionID {
                try PaymentRecord.recordSubscription(db, paymentID: payment.paymentID, subscriptionID: subscriptionID)
            }
            try AuditLog.append(
                db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "stripe.\(type)",
                detail: "subscription_id=\(event.subscriptionID ?? "") status=\(event.objectStatus ?? "")", now: now)
        default:
            try StripeEventInbox.settle(db, eventID: eventID, .ignored, note: "type not acted on", now: now)
            return (.ignored, nil)
        }
        try StripeEventInbox.settle(db, eventID: eventID, .applied, note: note, now: now)
        return (.applied, refund)
    }

    /// Returns a note for the inbox, and the refund to send when a late payment found no stock.
    private func fulfil(
        _ db: any Connection, _ payment: PaymentRecord, paid: Fulfilment.Settlement, source: String, now: Int64
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
        }
    }

    private func close(_ db: any Connection, _ payment: PaymentRecord, to status: PaymentStatus, kind: String, now: Int64)
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
}
