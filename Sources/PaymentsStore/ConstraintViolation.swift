/// The schema's constraints a query expects to be refused by, whichever database refused it:
/// SQLite's extended result codes and PostgreSQL's SQLSTATEs meet here, so the typed queries
/// match one name.
enum ConstraintViolation: Equatable {
    /// A UNIQUE index or primary key.
    case unique
    /// A trigger refused the change (the refund cap, the append-only audit trail).
    case trigger

    static func of(_ error: any Error) -> ConstraintViolation? {
        if let error = error as? SQLiteError {
            if error.code == .constraintUnique || error.code == .constraintPrimaryKey { return .unique }
            if error.code == .constraintTrigger { return .trigger }
            return nil
        }
        if let error = error as? PostgresError {
            if error.sqlState == PostgresError.uniqueViolation { return .unique }
            if error.sqlState == PostgresError.raisedByTrigger { return .trigger }
        }
        return nil
    }
}
