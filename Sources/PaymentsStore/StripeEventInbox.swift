import PaymentsDomain

/// The webhook inbox's rows (guarantee 10): an event is stored under its UNIQUE id before the
/// delivery is answered, then settled once (APPLIED or IGNORED). Only the fields paymentsd acts
/// on are kept, never the body with its personal data.
public enum StripeEventInbox {
    /// An event as stored.
    public struct Event: Sendable, Equatable {
        public var eventID: String
        public var type: String
        public var created: Int64
        public var objectID: String
        public var dealID: String?
        public var paymentID: String?
        public var objectStatus: String?
        public var paymentStatus: String?
        public var paymentIntentID: String?
        public var subscriptionID: String?
        public var amountTotal: Int64?
        /// Still to be applied.
        public var isPending: Bool
        public var receivedAt: Int64

        public init(
            eventID: String, type: String, created: Int64, objectID: String, dealID: String?, paymentID: String?,
            objectStatus: String?, paymentStatus: String?, paymentIntentID: String?, subscriptionID: String?,
            amountTotal: Int64?, isPending: Bool = true, receivedAt: Int64 = 0
        ) {
            self.eventID = eventID
            self.type = type
            self.created = created
            self.objectID = objectID
            self.dealID = dealID
            self.paymentID = paymentID
            self.objectStatus = objectStatus
            self.paymentStatus = paymentStatus
            self.paymentIntentID = paymentIntentID
            self.subscriptionID = subscriptionID
            self.amountTotal = amountTotal
            self.isPending = isPending
            self.receivedAt = receivedAt
        }
    }

    /// A refund an event names, as the event showed it.
    public struct NamedRefund: Sendable, Equatable {
        public var stripeRefundID: String
        public var amount: Int64
        public var status: String
        /// `metadata[refund_id]`: set on the refunds paymentsd sent.
        public var refundID: String?
        public var failureReason: String?

        public init(stripeRefundID: String, amount: Int64, status: String, refundID: String?, failureReason: String?) {
            self.stripeRefundID = stripeRefundID
            self.amount = amount
            self.status = status
            self.refundID = refundID
            self.failureReason = failureReason
        }
    }

    /// How an event was settled.
    public enum Settlement: String, Sendable {
        case applied = "APPLIED"
        case ignored = "IGNORED"
    }

    /// The note of an event set aside because no payment of paymentsd is its (counted as an orphan).
    public static let orphanNote = "no payment of paymentsd"

    /// Stores a new event with the refunds it names, PENDING; false when its id is known (a redelivery).
    public static func insert(_ db: any Connection, _ event: Event, refunds: [NamedRefund], now: Int64) throws -> Bool {
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
        for refund in refunds {
            try db.query(
                """
                INSERT INTO stripe_event_refunds (event_id, stripe_refund_id, amount, status, refund_id, failure_reason)
                VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
                """, event.eventID, refund.stripeRefundID, refund.amount, refund.status, refund.refundID,
                refund.failureReason)
        }
        return true
    }

    /// Whether an event with this id is stored: a redelivery is recognised by this read alone.
    public static func isStored(_ db: any Connection, eventID: String) throws -> Bool {
        try db.queryFirst("SELECT 1 FROM stripe_events WHERE event_id = ?", eventID) != nil
    }

    public static func load(_ db: any Connection, eventID: String) throws -> Event? {
        try db.queryFirst(
            """
            SELECT event_id, type, created, object_id, deal_id, payment_id, object_status, payment_status,
                payment_intent_id, subscription_id, amount_total, state, received_at
            FROM stripe_events WHERE event_id = ?
            """, eventID
        ).map { row in
            Event(
                eventID: row.string(0), type: row.string(1), created: row.int64(2), objectID: row.string(3),
                dealID: row.optionalString(4), paymentID: row.optionalString(5), objectStatus: row.optionalString(6),
                paymentStatus: row.optionalString(7), paymentIntentID: row.optionalString(8),
                subscriptionID: row.optionalString(9), amountTotal: row.optionalInt64(10),
                isPending: row.string(11) == "PENDING", receivedAt: row.int64(12))
        }
    }

    /// The refunds the event names, in the order it named them.
    public static func refunds(_ db: any Connection, eventID: String) throws -> [NamedRefund] {
        try db.query(
            """
            SELECT stripe_refund_id, amount, status, refund_id, failure_reason FROM stripe_event_refunds
            WHERE event_id = ? ORDER BY rowid
            """, eventID
        ).map {
            NamedRefund(
                stripeRefundID: $0.string(0), amount: $0.int64(1), status: $0.string(2), refundID: $0.optionalString(3),
                failureReason: $0.optionalString(4))
        }
    }

    /// Every pending event, oldest first.
    public static func pendingIDs(_ db: any Connection) throws -> [String] {
        try db.query("SELECT event_id FROM stripe_events WHERE state = 'PENDING' ORDER BY received_at, event_id")
            .map { $0.string(0) }
    }

    /// Pending events naming one of the deal's payment intents: those that arrived before their
    /// payment knew its intent.
    public static func pendingForPaymentIntents(_ db: any Connection, dealID: String) throws -> [String] {
        try db.query(
            """
            SELECT e.event_id FROM stripe_events e JOIN payments p ON p.payment_intent_id = e.payment_intent_id
            WHERE e.state = 'PENDING' AND p.deal_id = ? ORDER BY e.received_at, e.event_id
            """, dealID
        ).map { $0.string(0) }
    }

    public static func settle(_ db: any Connection, eventID: String, _ settlement: Settlement, note: String, now: Int64)
        throws
    {
        try db.query(
            "UPDATE stripe_events SET state = ?, note = ?, applied_at = ? WHERE event_id = ?", settlement.rawValue, note,
            now, eventID)
    }
}
