import PaymentsDomain


/// Operations in progress and their recovery points (behaviour.md, "How a command runs").
///
/// A row is written in the transaction that starts an operation, its
/// recovery point advanced in the transaction of each later step, and
/// `finished_at` set by the last. Whatever is unfinished is resumed at
/// start-up and by the janitor, through the same step code.
public enum OperationLog {
    public enum Kind: String, Sendable {
        /// Create the Stripe Checkout Session of a CREATED payment and record it.
        case createSession = "create_session"
        /// Expire a payment's session at Stripe, then release what it held.
        case expireSession = "expire_session"
        /// Send a PENDING refund to Stripe and record its answer; one operation per refund,
        /// its `detail` the refund id (guarantee 7, and late payments of guarantee 5).
        case sendRefund = "send_refund"
    }

    public struct Record: Sendable, Equatable {
        public let id: String
        public let kind: Kind
        public let dealID: String
        public let paymentID: String
        public let recoveryPoint: RecoveryPoint
        public let attempts: Int
        public let detail: String?
        /// Why an expiry was started (`expire_session` only).
        public let cause: ExpiryCause?
    }

    /// An operation's id: its kind and what it works on, the payment unless `subject` names
    /// something finer (a refund: a payment has many).
    public static func id(_ kind: Kind, paymentID: String, subject: String? = nil) -> String {
        "\(kind.rawValue):\(subject ?? paymentID)"
    }

    /// Starts the operation. An unfinished one of the same id is continued as it is (a retried
    /// command resumes it); a finished one is started again with the new detail (a second
    /// expiry of one payment, say after an asynchronous payment failed, has its own reason).
    public static func start(
        _ db: any Connection, _ kind: Kind, dealID: String, paymentID: String, subject: String? = nil, recoveryPoint: RecoveryPoint,
        cause: ExpiryCause? = nil, detail: String? = nil, now: Int64
    ) throws {
        try db.query(
            """
            INSERT INTO operations (id, kind, deal_id, payment_id, recovery_point, cause, detail, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET recovery_point = excluded.recovery_point, cause = excluded.cause,
                detail = excluded.detail, attempts = 0, last_error = NULL, next_attempt_at = NULL, finished_at = NULL,
                updated_at = excluded.updated_at
            WHERE operations.finished_at IS NOT NULL
            """,
            arguments: [
                Self.id(kind, paymentID: paymentID, subject: subject), kind.rawValue, dealID, paymentID,
                recoveryPoint.rawValue,
                cause?.rawValue, detail, now, now,
            ])
    }

    public static func advance(_ db: any Connection, _ kind: Kind, paymentID: String, to recoveryPoint: RecoveryPoint, detail: String?, now: Int64)
        throws
    {
        try db.query(
            "UPDATE operations SET recovery_point = ?, detail = ?, updated_at = ? WHERE id = ?", recoveryPoint.rawValue, detail,
            now, Self.id(kind, paymentID: paymentID))
    }

    public static func finish(_ db: any Connection, _ kind: Kind, paymentID: String, subject: String? = nil, now: Int64) throws {
        try db.query(
            "UPDATE operations SET recovery_point = ?, finished_at = ?, updated_at = ? WHERE id = ? AND finished_at IS NULL",
            RecoveryPoint.done.rawValue, now, now, Self.id(kind, paymentID: paymentID, subject: subject))
    }

    /// Notes a failed attempt; the janitor waits longer after each (2, 4, 8 ... up to 300 s).
    public static func recordFailure(
        _ db: any Connection, _ kind: Kind, paymentID: String, subject: String? = nil, error: String, now: Int64
    ) throws {
        try db.query(
            """
            UPDATE operations SET attempts = attempts + 1, last_error = ?, updated_at = ?,
                next_attempt_at = ? + CASE WHEN attempts >= 8 THEN 300 ELSE CAST(1 AS BIGINT) << CAST(attempts + 1 AS INTEGER) END
            WHERE id = ? AND finished_at IS NULL
            """, error, now, now, Self.id(kind, paymentID: paymentID, subject: subject))
    }

    public static func find(_ db: any Connection, _ kind: Kind, paymentID: String) throws -> Record? {
        try Self.records(db, "id = ?", [Self.id(kind, paymentID: paymentID)]).first
    }

    /// Unfinished operations due now (`force`: all of them, as at start-up).
    public static func unfinished(_ db: any Connection, now: Int64, force: Bool) throws -> [Record] {
        try Self.records(
            db, "finished_at IS NULL" + (force ? "" : " AND coalesce(next_attempt_at, 0) <= ?"), force ? [] : [now])
    }

    public static func pendingCount(_ db: any Connection) throws -> Int64 {
        try db.queryFirst("SELECT count(*) FROM operations WHERE finished_at IS NULL")!.int64(0)
    }

    private static func records(_ db: any Connection, _ condition: String, _ arguments: [any SQLValueConvertible]) throws
        -> [Record]
    {
        try db.query(
            """
            SELECT id, kind, coalesce(deal_id, ''), coalesce(payment_id, ''), recovery_point, attempts, detail, cause
            FROM operations WHERE \(condition) ORDER BY created_at, id
            """, arguments: arguments
        ).compactMap { row in
            // A kind or point this binary does not know was written by a newer paymentsd; the schema
            // version check refuses such a database at start-up, so this never skips a real row.
            guard let kind = Kind(rawValue: row.string(1)), let point = RecoveryPoint(rawValue: row.string(4)) else {
                return nil
            }
            return Record(
                id: row.string(0), kind: kind, dealID: row.string(2), paymentID: row.string(3),
                recoveryPoint: point, attempts: row.int(5), detail: row.optionalString(6),
                cause: row.optionalString(7).flatMap(ExpiryCause.init(rawValue:)))
        }
    }
}
