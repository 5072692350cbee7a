/// Open checkouts whose outcome only Stripe knows now: no event settled them. The janitor asks Stripe
/// about each, with a backoff per payment, so 1,000 open checkouts are not 1,000 calls per sweep.
public enum OutcomeChecks {
    /// Open checkouts with a session, created before `createdBefore`, whose next check is due (or all
    /// of them, `ignoringBackoff`), the least recently checked first.
    public static func due(
        _ db: any Connection, createdBefore: Int64, now: Int64, ignoringBackoff: Bool, limit: Int
    ) throws -> [String] {
        try db.query(
            """
            SELECT payment_id FROM payments
            WHERE status = 'CREATED' AND checkout_session_id IS NOT NULL AND created_at <= ?
              AND (? = 1 OR outcome_next_check_at IS NULL OR outcome_next_check_at <= ?)
            ORDER BY coalesce(outcome_next_check_at, 0), created_at LIMIT ?
            """, createdBefore, ignoringBackoff, now, limit
        ).map { $0.string(0) }
    }

    /// Records one more check of a checkout still open, and when it may be asked about again.
    public static func record(_ db: any Connection, paymentID: String, nextAt: Int64) throws {
        try db.query(
            "UPDATE payments SET outcome_checks = outcome_checks + 1, outcome_next_check_at = ? WHERE payment_id = ?",
            nextAt, paymentID)
    }

    public static func checks(_ db: any Connection, paymentID: String) throws -> Int {
        try db.queryFirst("SELECT outcome_checks FROM payments WHERE payment_id = ?", paymentID)?.int(0) ?? 0
    }

    /// Open checkouts with a session older than `createdBefore`: their outcome is unknown until asked.
    public static func unknownCount(_ db: any Connection, createdBefore: Int64) throws -> Int {
        try db.queryFirst(
            "SELECT count(*) FROM payments WHERE status = 'CREATED' AND checkout_session_id IS NOT NULL AND created_at <= ?",
            createdBefore)!.int(0)
    }
}
