/// The schema of paymentsd's database, as numbered migrations.
///
/// Money is INTEGER minor units; times are INTEGER Unix seconds; tables are
/// STRICT so a wrong type is an error instead of a silent conversion.
public enum Schema {
    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "operations",
            sql: """
                -- A mutating command in progress: its steps commit their recovery point
                -- here, and whatever is not finished is resumed at start-up and by the janitor.
                CREATE TABLE operations (
                    id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    deal_id TEXT,
                    recovery_point TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT,
                    next_attempt_at INTEGER,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    finished_at INTEGER
                ) STRICT;
                CREATE INDEX operations_unfinished ON operations(next_attempt_at) WHERE finished_at IS NULL;
                """)
    ]
}
