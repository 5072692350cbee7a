import PaymentsDomain


/// Stock on hand and reserved, per tracked SKU (guarantee 5).
///
/// Reservation is one conditional UPDATE per SKU (`on_hand - reserved >=
/// quantity`), in the transaction that creates the payment, so two
/// checkouts can never both take the last unit. SKUs without a stock row are
/// not tracked and never limited.
public enum StockLedger {
    public struct Level: Sendable, Equatable {
        public let sku: String
        public let onHand: Int64
        public let reserved: Int64
        public var available: Int64 { self.onHand - self.reserved }
    }

    public static func get(_ db: any Connection, sku: String) throws -> Level? {
        try db.queryFirst("SELECT sku, on_hand, reserved FROM stock WHERE sku = ?", sku).map {
            Level(sku: $0.string(0), onHand: $0.int64(1), reserved: $0.int64(2))
        }
    }

    /// Sets stock on hand, creating the SKU's row; never below what is reserved.
    public static func set(_ db: any Connection, sku: String, onHand: Int64, now: Int64) throws -> Level {
        let before = try Self.get(db, sku: sku)
        if let before, onHand < before.reserved {
            throw PaymentsError.stockBelowReserved(sku: sku, reserved: before.reserved)
        }
        try db.query(
            """
            INSERT INTO stock (sku, on_hand, reserved, updated_at) VALUES (?, ?, 0, ?)
            ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at
            """, sku, onHand, now)
        try AuditLog.append(
            db, dealID: nil, paymentID: nil, kind: "stock.set", from: before.map { String($0.onHand) } ?? "",
            to: String(onHand), detail: "sku=\(sku)", now: now)
        return try Self.get(db, sku: sku)!
    }

    /// Adds `delta` (may be negative) to stock on hand; never below what is reserved.
    public static func adjust(_ db: any Connection, sku: String, delta: Int64, now: Int64) throws -> Level {
        guard let before = try Self.get(db, sku: sku) else { throw PaymentsError.skuNotFound(sku) }
        let (onHand, overflow) = before.onHand.addingReportingOverflow(delta)
        guard !overflow else {
            throw PaymentsError.invalidField(field: "delta", message: "on_hand + delta does not fit in 64 bits")
        }
        guard onHand >= before.reserved else {
            throw PaymentsError.stockBelowReserved(sku: sku, reserved: before.reserved)
        }
        try db.query("UPDATE stock SET on_hand = ?, updated_at = ? WHERE sku = ?", onHand, now, sku)
        try AuditLog.append(
            db, dealID: nil, paymentID: nil, kind: "stock.adjusted", from: String(before.onHand), to: String(onHand),
            detail: "sku=\(sku) delta=\(delta)", now: now)
        return try Self.get(db, sku: sku)!
    }

    /// Holds stock of every tracked SKU for the payment, or throws `insufficientStock` naming the first short SKU.
    public static func reserve(_ db: any Connection, paymentID: String, quantities: [String: Int64], now: Int64) throws {
        for (sku, quantity) in quantities.sorted(by: { $0.key < $1.key }) {
            try db.query(
                "UPDATE stock SET reserved = reserved + ?, updated_at = ? WHERE sku = ? AND on_hand - reserved >= ?",
                quantity, now, sku, quantity)
            if db.changes == 1 {
                // A late payment holds again what it had released: the row exists, RELEASED.
                try db.query(
                    """
                    INSERT INTO reservations VALUES (?, ?, ?, 'HELD')
                    ON CONFLICT (payment_id, sku) DO UPDATE SET quantity = excluded.quantity, state = 'HELD'
                    """, paymentID, sku, quantity)
            } else if try Self.get(db, sku: sku) != nil {
                throw PaymentsError.insufficientStock(sku: sku)
            }
        }
    }

    /// Gives the payment's held stock back.
    public static func release(_ db: any Connection, paymentID: String, now: Int64) throws {
        try Self.settle(db, paymentID: paymentID, to: "RELEASED", onHandChange: 0, now: now)
    }

    /// Turns the payment's held stock into sold stock: on hand and reserved both go down.
    public static func commit(_ db: any Connection, paymentID: String, now: Int64) throws {
        try Self.settle(db, paymentID: paymentID, to: "COMMITTED", onHandChange: 1, now: now)
    }

    /// Returns a refunded order's sold stock to on hand (its caller makes sure it happens once).
    public static func restock(_ db: any Connection, paymentID: String, now: Int64) throws {
        let sold = try db.query(
            "SELECT sku, quantity FROM reservations WHERE payment_id = ? AND state = 'COMMITTED'", paymentID)
        for row in sold {
            try db.query(
                "UPDATE stock SET on_hand = on_hand + ?, updated_at = ? WHERE sku = ?", row.int64(1), now, row.string(0))
        }
    }

    private static func settle(_ db: any Connection, paymentID: String, to state: String, onHandChange: Int64, now: Int64)
        throws
    {
        let held = try db.query("SELECT sku, quantity FROM reservations WHERE payment_id = ? AND state = 'HELD'", paymentID)
        for row in held {
            try db.query(
                "UPDATE stock SET reserved = reserved - ?, on_hand = on_hand - ?, updated_at = ? WHERE sku = ?",
                row.int64(1), row.int64(1) * onHandChange, now, row.string(0))
        }
        try db.query("UPDATE reservations SET state = ? WHERE payment_id = ? AND state = 'HELD'", state, paymentID)
    }
}
