/// Where the Events API catch-up got to (one row): the newest event it applied, and when it last
/// read Stripe's list to the end.
public enum StripeEventCursor {
    public struct Position: Sendable, Equatable {
        public var eventID: String?
        public var eventCreated: Int64?
        public var reachedEndAt: Int64?
    }

    public static func load(_ db: any Connection) throws -> Position {
        guard let row = try db.queryFirst("SELECT event_id, event_created, reached_end_at FROM stripe_event_cursor WHERE id = 1")
        else { return Position() }
        return Position(eventID: row.optionalString(0), eventCreated: row.optionalInt64(1), reachedEndAt: row.optionalInt64(2))
    }

    /// Moves the cursor to `eventID`, the newest event of a page just applied.
    public static func advance(_ db: any Connection, eventID: String, created: Int64) throws {
        try db.query(
            """
            INSERT INTO stripe_event_cursor (id, event_id, event_created) VALUES (1, ?, ?)
            ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id, event_created = excluded.event_created
            """, eventID, created)
    }

    public static func reachedEnd(_ db: any Connection, at now: Int64) throws {
        try db.query(
            """
            INSERT INTO stripe_event_cursor (id, reached_end_at) VALUES (1, ?)
            ON CONFLICT (id) DO UPDATE SET reached_end_at = excluded.reached_end_at
            """, now)
    }
}
