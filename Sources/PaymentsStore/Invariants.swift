import PaymentsDomain

/// The counts an operator watches (guarantee 13) and the janitor acts on.
public enum Invariants {
    /// Unfinished operations that failed at least `attempts` times.
    public static func stuckOperations(_ db: any Connection, attempts: Int) throws -> Int {
        try db.queryFirst("SELECT count(*) FROM operations WHERE finished_at IS NULL AND attempts >= ?", attempts)!.int(0)
    }

    /// Events set aside because no payment of paymentsd is theirs.
    public static func orphanedEvents(_ db: any Connection) throws -> Int {
        try db.queryFirst(
            "SELECT count(*) FROM stripe_events WHERE state = 'IGNORED' AND note = ?", StripeEventInbox.orphanNote)!
            .int(0)
    }

    public static func pendingEvents(_ db: any Connection) throws -> Int {
        try db.queryFirst("SELECT count(*) FROM stripe_events WHERE state = 'PENDING'")!.int(0)
    }

    /// Open checkouts whose `expires_at` is at or before `cutoff`, oldest first.
    public static func overdueCheckouts(_ db: any Connection, cutoff: Int64) throws -> [String] {
        try db.query(
            "SELECT payment_id FROM payments WHERE status = 'CREATED' AND expires_at <= ? ORDER BY expires_at", cutoff
        ).map { $0.string(0) }
    }

    /// Payments that arrived for a checkout already closed.
    public static func latePayments(_ db: any Connection) throws -> Int {
        try db.queryFirst("SELECT count(*) FROM audit_events WHERE kind = 'payment.late'")!.int(0)
    }

    /// Payments whose succeeded refunds exceed what was paid: zero unless something is wrong.
    public static func overRefundedPayments(_ db: any Connection) throws -> Int {
        try db.queryFirst(
            """
            SELECT count(*) FROM payments p
            WHERE (SELECT coalesce(sum(amount), 0) FROM refunds r
                   WHERE r.payment_id = p.payment_id AND r.status = 'SUCCEEDED') > p.amount_total
            """)!.int(0)
    }

    /// Names held for a checkout that is no longer open.
    public static func claimsHeldWithoutCheckout(_ db: any Connection) throws -> Int {
        try db.queryFirst(
            """
            SELECT count(*) FROM claims c JOIN payments p USING (payment_id)
            WHERE c.state = 'HELD' AND p.status <> 'CREATED'
            """)!.int(0)
    }

    /// Benchmarks only: the table of `writeProbeRow`.
    public static func createProbeTable(_ db: any Connection) throws {
        switch db.dialect {
        case .sqlite: try db.executeScript("CREATE TABLE IF NOT EXISTS bench_commits (n INTEGER) STRICT")
        case .postgresql: try db.executeScript("CREATE TABLE IF NOT EXISTS bench_commits (n BIGINT)")
        }
    }

    /// Benchmarks only: one row, whose durable commit is the baseline of write figures.
    public static func writeProbeRow(_ db: any Connection) throws {
        try db.query("INSERT INTO bench_commits VALUES (1)")
    }
}
