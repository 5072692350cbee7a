import PaymentsDomain
import PaymentsStore
import StripeClient

/// Turns a paid checkout into an order: the one code path for every trigger.
///
/// In one transaction: the payment becomes PAID with its payment intent (and
/// subscription), its held stock is committed and its held names taken, and
/// one order is created (UNIQUE per payment). Running it again for a paid
/// payment changes nothing.
enum Fulfilment {
    /// What Stripe says about a paid checkout: its payment intent, the subscription it made,
    /// and what it charged (a subscription's amount is its prices', known only to Stripe).
    struct Settlement: Sendable {
        var paymentIntentID: String?
        var subscriptionID: String?
        var amountTotal: Int64?

        init(paymentIntentID: String?, subscriptionID: String? = nil, amountTotal: Int64? = nil) {
            self.paymentIntentID = paymentIntentID
            self.subscriptionID = subscriptionID
            self.amountTotal = amountTotal
        }

        init(_ session: CheckoutSession) {
            self.init(
                paymentIntentID: session.paymentIntent, subscriptionID: session.subscription,
                amountTotal: session.amountTotal)
        }
    }

    /// Records the settlement's ids, and for a subscription the amount Stripe charged.
    static func record(_ db: any Connection, _ payment: PaymentRecord, _ paid: Settlement) throws {
        try PaymentRecord.recordSettlement(
            db, paymentID: payment.paymentID, paymentIntentID: paid.paymentIntentID, subscriptionID: paid.subscriptionID,
            amountTotal: paid.amountTotal)
    }

    /// Fulfils `payment` if it is not paid yet; returns whether this call did. A closed checkout
    /// (a late payment) must have had its stock held again by the caller first.
    @discardableResult
    static func apply(_ db: any Connection, _ payment: PaymentRecord, paid: Settlement, source: String, now: Int64) throws
        -> Bool
    {
        switch payment.status {
        case .created, .expired, .canceled: break
        case .paid, .partiallyRefunded, .refunded, .failed: return false
        }
        try Self.record(db, payment, paid)
        try PaymentRecord.transition(db, payment, to: .paid, kind: "payment.paid", detail: "source=\(source)", now: now)
        try CheckoutHolds.commit(db, paymentID: payment.paymentID, now: now)
        let orderID = try OrderBook.insert(db, payment: payment, now: now)
        try AuditLog.append(
            db, dealID: payment.dealID, paymentID: payment.paymentID, kind: "order.created", detail: "order_id=\(orderID)",
            now: now)
        return true
    }
}
