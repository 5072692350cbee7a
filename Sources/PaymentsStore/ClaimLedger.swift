import PaymentsDomain

/// Unique names a checkout holds for its deal (guarantee 6), each function in the
/// caller's transaction.
///
/// A hold is one row per payment and key; the partial UNIQUE index over HELD and
/// TAKEN rows lets only one deal have a name, whatever the code above it does.
public enum ClaimLedger {
    /// What GetClaim says about a name.
    public struct Status: Sendable, Equatable {
        public let key: String
        public let state: ClaimState
        public let dealID: String
        public let paymentID: String
        /// For HELD: when the holding checkout closes at Stripe.
        public let expiresAt: Int64
    }

    /// Holds every key for the payment, or throws `claimTaken` naming the first one another deal has.
    public static func hold(_ db: any Connection, paymentID: String, dealID: String, keys: [String], now: Int64) throws {
        for key in keys {
            do {
                // A late payment holds again what its checkout had released: the row exists.
                _ = try db.statementThatMayFail {
                    try db.query(
                        """
                        INSERT INTO claims (key, payment_id, deal_id, state, created_at, updated_at)
                        VALUES (?, ?, ?, 'HELD', ?, ?)
                        ON CONFLICT (payment_id, key) DO UPDATE SET state = 'HELD', updated_at = excluded.updated_at
                        """, key, paymentID, dealID, now, now)
                }
            } catch let error where ConstraintViolation.of(error) == .unique {
                // The one UNIQUE index of claims beyond its primary key: claims_one_holder.
                throw PaymentsError.claimTaken(key: key)
            }
        }
    }

    /// Refuses, before anything is closed for it, a request whose names another deal has: a
    /// REPLACE must not cancel the open checkout only to be refused the names afterwards.
    /// `replacing` is the checkout being replaced, whose own holds do not count.
    public static func ensureFree(_ db: any Connection, keys: [String], replacing paymentID: String) throws {
        for key in keys {
            let current = try Self.get(db, key: key)
            let someoneHasIt: Bool
            switch current.state {
            case .held, .taken: someoneHasIt = current.paymentID != paymentID
            case .free: someoneHasIt = false
            }
            if someoneHasIt { throw PaymentsError.claimTaken(key: key) }
        }
    }

    /// Lets go of the payment's holds (its checkout closed without a sale).
    public static func release(_ db: any Connection, paymentID: String, now: Int64) throws {
        try db.query(
            "UPDATE claims SET state = 'RELEASED', updated_at = ? WHERE payment_id = ? AND state = 'HELD'", now, paymentID)
    }

    /// The payment is paid: its held names are its deal's now.
    public static func take(_ db: any Connection, paymentID: String, now: Int64) throws {
        try db.query(
            "UPDATE claims SET state = 'TAKEN', updated_at = ? WHERE payment_id = ? AND state = 'HELD'", now, paymentID)
    }

    /// The names a payment asked for, in the order it asked.
    public static func keys(_ db: any Connection, paymentID: String) throws -> [String] {
        try db.query("SELECT key FROM claims WHERE payment_id = ? ORDER BY rowid", paymentID).map { $0.string(0) }
    }

    public static func get(_ db: any Connection, key: String) throws -> Status {
        guard
            let row = try db.queryFirst(
                """
                SELECT c.state, c.deal_id, c.payment_id, p.expires_at FROM claims c JOIN payments p USING (payment_id)
                WHERE c.key = ? AND c.state IN ('HELD', 'TAKEN')
                """, key)
        else { return Status(key: key, state: .free, dealID: "", paymentID: "", expiresAt: 0) }
        let held = row.string(0) == "HELD"
        return Status(
            key: key, state: held ? .held : .taken, dealID: row.string(1), paymentID: row.string(2),
            expiresAt: held ? row.int64(3) : 0)
    }

    /// ReleaseClaim: frees a TAKEN name, audited. A HELD one belongs to an open checkout: cancel that instead.
    public static func releaseTaken(_ db: any Connection, key: String, now: Int64) throws -> Status {
        let current = try Self.get(db, key: key)
        switch current.state {
        case .taken:
            try db.query(
                "UPDATE claims SET state = 'RELEASED', updated_at = ? WHERE key = ? AND state = 'TAKEN'", now, key)
            try AuditLog.append(
                db, dealID: current.dealID, paymentID: current.paymentID, kind: "claim.released", from: "TAKEN",
                to: "FREE", detail: "key=\(key)", now: now)
            return try Self.get(db, key: key)
        case .held:
            throw PaymentsError.claimHeld(key: key, dealID: current.dealID)
        case .free:
            throw PaymentsError.claimNotFound(key)
        }
    }
}
