import Synchronization

/// Bytes of request frames read and not yet answered, bounded for the whole server and for each
/// connection (an `Account`).
///
/// A frame is admitted, whole, when its length is known and before its body is read; a frame that
/// does not fit waits, and its connection stops reading until an answer frees room. Because only
/// admitted frames are read, every admitted frame can finish arriving and every wait ends when a
/// request is answered: the budget never deadlocks. A frame larger than the room left is admitted
/// when nothing else is held, so no frame is refused for its size alone.
final class MemoryBudget: Sendable {
    private struct State {
        var held = 0
        var waiters: [ObjectIdentifier: @Sendable () -> Void] = [:]
        var peakSinceDrained = 0
    }

    let limit: Int
    private let state = Mutex(State())
    /// Told when nothing is held any more after more than `drainReportThreshold` was.
    private let onDrained: @Sendable () -> Void
    private let drainReportThreshold: Int

    init(limit: Int, drainReportThreshold: Int = 8 << 20, onDrained: @escaping @Sendable () -> Void = {}) {
        self.limit = limit
        self.drainReportThreshold = drainReportThreshold
        self.onDrained = onDrained
    }

    var held: Int { self.state.withLock { $0.held } }

    func account(limit: Int) -> Account { Account(budget: self, limit: limit) }

    /// One connection's share.
    final class Account: Sendable {
        private struct State {
            var held = 0
            var waiter: (@Sendable () -> Void)?
            var closed = false
        }

        let limit: Int
        private let budget: MemoryBudget
        private let state = Mutex(State())

        fileprivate init(budget: MemoryBudget, limit: Int) {
            self.budget = budget
            self.limit = limit
        }

        var held: Int { self.state.withLock { $0.held } }

        /// Takes `bytes` if they fit; otherwise remembers `wakeup`, called once room may have been
        /// freed (the caller then asks again), and returns false.
        func admit(_ bytes: Int, wakeup: @escaping @Sendable () -> Void) -> Bool {
            self.state.withLock { state in
                guard !state.closed else { return false }
                guard state.held == 0 || state.held + bytes <= self.limit else {
                    state.waiter = wakeup
                    return false
                }
                guard self.budget.take(bytes, for: self, force: false, wakeup: wakeup) else { return false }
                state.held += bytes
                return true
            }
        }

        /// Takes bytes that are already in memory (whole frames read in one go), whether they fit or not.
        func charge(_ bytes: Int) {
            self.state.withLock { state in
                guard !state.closed else { return }
                _ = self.budget.take(bytes, for: self, force: true, wakeup: {})
                state.held += bytes
            }
        }

        /// Gives back the bytes of an answered request.
        func release(_ bytes: Int) {
            let wake = self.state.withLock { state -> [@Sendable () -> Void] in
                let freed = min(bytes, state.held)
                state.held -= freed
                var wake = self.budget.give(freed)
                if let waiter = state.waiter { wake.append(waiter) }
                state.waiter = nil
                return wake
            }
            for wakeup in wake { wakeup() }
        }

        /// The connection ended: whatever it still holds (frames read but never answered) is freed.
        func close() {
            let wake = self.state.withLock { state -> [@Sendable () -> Void] in
                state.closed = true
                state.waiter = nil
                defer { state.held = 0 }
                return self.budget.give(state.held, forgetting: self)
            }
            for wakeup in wake { wakeup() }
        }
    }

    /// Called with the account's lock held: the order is always account, then budget.
    fileprivate func take(_ bytes: Int, for account: Account, force: Bool, wakeup: @escaping @Sendable () -> Void) -> Bool {
        self.state.withLock { state in
            guard force || state.held == 0 || state.held + bytes <= self.limit else {
                state.waiters[ObjectIdentifier(account)] = wakeup
                return false
            }
            state.held += bytes
            state.peakSinceDrained = max(state.peakSinceDrained, state.held)
            return true
        }
    }

    /// Frees bytes; returns what to call once the caller let go of its lock: the wakeups of every
    /// connection that waits for room (each asks again on its own loop), and the drain report.
    fileprivate func give(_ bytes: Int, forgetting account: Account? = nil) -> [@Sendable () -> Void] {
        self.state.withLock { state in
            state.held -= bytes
            if let account { state.waiters[ObjectIdentifier(account)] = nil }
            let waiters = Array(state.waiters.values)
            state.waiters.removeAll()
            guard state.held == 0, state.peakSinceDrained > self.drainReportThreshold else { return waiters }
            state.peakSinceDrained = 0
            return waiters + [self.onDrained]
        }
    }
}
