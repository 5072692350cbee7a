import PaymentsDomain


/// The append-only audit trail (guarantee 12). Written only inside the
/// transaction that makes the change it records.
public enum AuditLog {
    public struct Entry: Sendable, Equatable {
        public let seq: Int64
        public let at: Int64
        public let paymentID: String
        public let kind: String
        public let fromStatus: String
        public let toStatus: String
        public let detail: String
    }

    public static func append(
        _ db: any Connection, dealID: String?, paymentID: String?, kind: String, from: String = "", to: String = "",
        detail: String = "", now: Int64
    ) throws {
        precondition(db.isInTransaction, "audit rows are written in the transaction of their change")
        try db.query(
            "INSERT INTO audit_events (at, deal_id, payment_id, kind, from_status, to_status, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            now, dealID, paymentID, kind, from, to, detail)
    }

    /// The deal's trail, oldest first.
    public static func entries(_ db: any Connection, dealID: String) throws -> [Entry] {
        try db.query(
            "SELECT seq, at, coalesce(payment_id, ''), kind, from_status, to_status, detail FROM audit_events WHERE deal_id = ? ORDER BY seq",
            dealID
        ).map {
            Entry(
                seq: $0.int64(0), at: $0.int64(1), paymentID: $0.string(2), kind: $0.string(3), fromStatus: $0.string(4),
                toStatus: $0.string(5), detail: $0.string(6))
        }
    }
}
