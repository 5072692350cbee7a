import Synchronization

/// One transaction of the group commit: the writes that queued up together, each in its own
/// savepoint, committed by one `COMMIT`, and every caller answered only after it.
///
/// What a caller sees is what it would see if its write had run alone: its own error when its
/// body threw (nothing of it left), its result when the transaction committed, and otherwise the
/// storage trouble that kept the transaction from committing.
struct WriteBatch: Sendable {
    /// Transactions and writes committed so far, so a benchmark or a test can tell how many writes
    /// shared each fsync.
    final class Counters: Sendable {
        let transactions = Atomic<Int>(0)
        let writes = Atomic<Int>(0)
        init() {}
    }

    let counters: Counters
    let condition: StorageCondition
    let busyTimeoutMS: Int
    let path: String

    func commit(
        _ connection: SQLiteConnection, _ queued: [any QueuedWrite], requeue: ([any QueuedWrite]) -> Void
    ) {
        // A write whose call's deadline passed while it queued is not run: nothing changed.
        let now = ContinuousClock.now
        var writes: [any QueuedWrite] = []
        for write in queued {
            if case .until(let deadline) = write.wait, deadline <= now {
                write.finish(committed: false, error: StorageTrouble.deadlinePassed)
            } else {
                writes.append(write)
            }
        }
        guard !writes.isEmpty else { return }
        if let trouble = self.condition.permanent { return Self.fail(writes, trouble) }
        guard !connection.isImmutable() else { return Self.fail(writes, self.condition.record(.readOnly)) }

        // The lock is waited for as long as the most impatient write allows. If it cannot be had in
        // that time, that write (and any as impatient) fails; the others wait again, without it.
        let timeouts = writes.map { self.busyTimeout(for: $0.wait, now: now) }
        let timeout = timeouts.min() ?? self.busyTimeoutMS
        connection.setBusyTimeout(milliseconds: timeout)
        do {
            try connection.control("BEGIN IMMEDIATE")
        } catch {
            let thrown = self.condition.classify(error)
            guard (thrown as? StorageTrouble) == .busy else { return Self.fail(writes, thrown) }
            let patient = zip(writes, timeouts).filter { $0.1 > timeout }.map(\.0)
            Self.fail(zip(writes, timeouts).filter { $0.1 <= timeout }.map(\.0), thrown)
            return requeue(patient)
        }

        for write in writes {
            guard !write.run(connection, classify: { self.condition.classify($0) }) else { continue }
            // Some errors (a full disk, an I/O error) make SQLite roll back the whole transaction:
            // the writes before this one are gone too, and the ones after it have nothing to join.
            guard connection.isInTransaction else {
                return Self.fail(writes, write.ownError ?? StorageTrouble.unavailable("the transaction was rolled back"))
            }
        }
        do {
            try connection.control("COMMIT")
        } catch {
            if connection.isInTransaction { try? connection.control("ROLLBACK") }
            return Self.fail(writes, self.condition.classify(error))
        }
        guard connection.isStillAtItsPath() else {
            let trouble = self.condition.record(.unavailable("the database file \(self.path) was removed or replaced"))
            return Self.fail(writes, trouble)
        }
        self.condition.recordSuccess()
        self.counters.transactions.add(1, ordering: .relaxed)
        self.counters.writes.add(writes.filter { $0.ownError == nil }.count, ordering: .relaxed)
        for write in writes { write.finish(committed: true, error: nil) }
    }

    private func busyTimeout(for wait: GroupCommitWriter.Wait, now: ContinuousClock.Instant) -> Int {
        switch wait {
        case .standard: self.busyTimeoutMS
        case .until(let deadline): min(self.busyTimeoutMS, max(0, Int((deadline - now) / .milliseconds(1))))
        case .never: 0
        }
    }

    /// Answers every write with `error`, except those whose own body threw, which keep their own.
    private static func fail(_ writes: [any QueuedWrite], _ error: any Error) {
        for write in writes { write.finish(committed: false, error: error) }
    }
}
