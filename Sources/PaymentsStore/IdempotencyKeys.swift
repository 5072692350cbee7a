/// Request idempotency's rows (protocol.md section 5): per caller uid and key, the hash of method
/// and payload and the final response. An empty response marks a key taken by a call that has
/// had no final answer yet.
public enum IdempotencyKeys {
    /// A key's row: its request hash, and its stored response (empty when none yet).
    public struct Entry: Sendable, Equatable {
        public let requestHash: [UInt8]
        public let response: [UInt8]
    }

    /// The key's row written after `since`, if any.
    public static func find(_ db: any Connection, callerUID: UInt32, key: String, since: Int64) throws -> Entry? {
        guard
            let row = try db.queryFirst(
                "SELECT request_hash, response FROM idempotency_keys WHERE caller_uid = ? AND key = ? AND created_at > ?",
                Int64(callerUID), key, since),
            case .blob(let hash) = row[0], case .blob(let response) = row[1]
        else { return nil }
        return Entry(requestHash: hash, response: response)
    }

    /// Stores the key's answer, replacing a row that had none (or an expired one).
    public static func save(
        _ db: any Connection, callerUID: UInt32, key: String, requestHash: [UInt8], response: [UInt8], now: Int64
    ) throws {
        try db.query(
            """
            INSERT INTO idempotency_keys (caller_uid, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (caller_uid, key) DO UPDATE SET request_hash = excluded.request_hash,
                response = excluded.response, created_at = excluded.created_at
            """, Int64(callerUID), key, SQLValue.blob(requestHash), SQLValue.blob(response), now)
    }

    /// Records the key as taken by this request, with no answer yet, unless it has a row.
    public static func markTaken(_ db: any Connection, callerUID: UInt32, key: String, requestHash: [UInt8], now: Int64)
        throws
    {
        try db.query(
            """
            INSERT INTO idempotency_keys (caller_uid, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (caller_uid, key) DO NOTHING
            """, Int64(callerUID), key, SQLValue.blob(requestHash), SQLValue.blob([]), now)
    }

    /// Forgets the rows written at or before `cutoff`.
    public static func purge(_ db: any Connection, before cutoff: Int64) throws {
        try db.query("DELETE FROM idempotency_keys WHERE created_at <= ?", cutoff)
    }
}
