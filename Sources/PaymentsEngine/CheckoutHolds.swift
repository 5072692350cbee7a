import PaymentsDomain
import PaymentsStore

/// What an open checkout holds for its deal, stock and unique names, held, released and
/// sold together, so that no path can let go of one and keep the other (guarantees 5, 6).
enum CheckoutHolds {
    /// Names first, then stock: a name another deal has is refused before any stock is touched,
    /// and either refusal rolls back the caller's whole transaction.
    static func hold(
        _ db: any Connection, paymentID: String, dealID: String, claims: [String], quantities: [String: Int64], now: Int64
    ) throws {
        try ClaimLedger.hold(db, paymentID: paymentID, dealID: dealID, keys: claims, now: now)
        try StockLedger.reserve(db, paymentID: paymentID, quantities: quantities, now: now)
    }

    /// The checkout closed without a sale (expired, cancelled, replaced, failed).
    static func release(_ db: any Connection, paymentID: String, now: Int64) throws {
        try StockLedger.release(db, paymentID: paymentID, now: now)
        try ClaimLedger.release(db, paymentID: paymentID, now: now)
    }

    /// The checkout was paid: stock sold, names taken.
    static func commit(_ db: any Connection, paymentID: String, now: Int64) throws {
        try StockLedger.commit(db, paymentID: paymentID, now: now)
        try ClaimLedger.take(db, paymentID: paymentID, now: now)
    }
}
