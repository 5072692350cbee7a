import Synchronization

/// Whether the database takes writes: the last write's storage trouble, or none.
///
/// A busy lock, a full disk or a read-only file pass when a write works again; a file removed or
/// damaged under the daemon does not (`permanent`), because nothing written after it is durable.
final class StorageCondition: Sendable {
    private struct State {
        var trouble: StorageTrouble?
    }

    private let state = Mutex(State())
    private let onChange: @Sendable (StorageTrouble?) -> Void

    init(onChange: @escaping @Sendable (StorageTrouble?) -> Void) {
        self.onChange = onChange
    }

    var current: StorageTrouble? { self.state.withLock { $0.trouble } }

    var permanent: StorageTrouble? {
        self.state.withLock { state in state.trouble.flatMap { $0.isPermanent ? $0 : nil } }
    }

    /// Remembers `trouble` and returns it to be thrown; a permanent trouble is never replaced.
    func record(_ trouble: StorageTrouble) -> StorageTrouble {
        let changed: StorageTrouble?? = self.state.withLock { state in
            if let known = state.trouble, known.isPermanent { return .none }
            guard state.trouble != trouble else { return .none }
            state.trouble = trouble
            return .some(trouble)
        }
        if case .some(let change) = changed { self.onChange(change) }
        return self.state.withLock { $0.trouble } ?? trouble
    }

    func recordSuccess() {
        let changed = self.state.withLock { state in
            guard let known = state.trouble, !known.isPermanent else { return false }
            state.trouble = nil
            return true
        }
        if changed { self.onChange(nil) }
    }

    /// The error to throw for `error`: SQLite's storage codes and PostgreSQL's become `StorageTrouble`, remembered
    /// when `recording` (writes) or permanent; anything else (a constraint, a misuse) stays itself.
    func classify(_ error: any Error, recording: Bool = true) -> any Error {
        let found: StorageTrouble? =
            if let sqlite = error as? SQLiteError { StorageTrouble.of(sqlite) }
            else if let postgres = error as? PostgresError { StorageTrouble.of(postgres) }
            else { nil }
        guard let trouble = found else { return error }
        if recording || trouble.isPermanent { return self.record(trouble) }
        // The reader is query-only: a write attempted on it is a bug, not a read-only file.
        if trouble == .readOnly { return error }
        return trouble
    }
}
