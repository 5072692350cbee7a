import PaymentsDomain

/// Orders: one per paid payment (UNIQUE), marked refunded and restocked at most once.
public enum OrderBook {
    /// The order of a payment's fulfilment; its id follows from the payment's.
    public static func insert(_ db: any Connection, payment: PaymentRecord, now: Int64) throws -> String {
        let orderID = "ord_" + payment.paymentID.dropFirst("pay_".count)
        try db.query(
            "INSERT INTO orders (order_id, payment_id, deal_id, created_at) VALUES (?, ?, ?, ?)", orderID,
            payment.paymentID, payment.dealID, now)
        return orderID
    }

    /// Marks the payment's order refunded; false when it already was.
    public static func markRefunded(_ db: any Connection, paymentID: String, now: Int64) throws -> Bool {
        try db.query("UPDATE orders SET refunded_at = ? WHERE payment_id = ? AND refunded_at IS NULL", now, paymentID)
        return db.changes == 1
    }

    /// Marks the payment's order restocked; false when it already was (stock goes back once).
    public static func markRestocked(_ db: any Connection, paymentID: String, now: Int64) throws -> Bool {
        try db.query("UPDATE orders SET restocked_at = ? WHERE payment_id = ? AND restocked_at IS NULL", now, paymentID)
        return db.changes == 1
    }
}
