import Dispatch
import Synchronization

/// Connections to PostgreSQL, opened when first needed, at most `size` at once, each lent to one
/// caller at a time. A connection that lost its server is closed, not given back: the next caller
/// opens a new one, which is how the store recovers from a restarted server without a restart of
/// its own.
///
/// libpq blocks its thread for a round trip, so each use runs on a Dispatch thread, never on the
/// Swift concurrency pool (two threads on a 2-core machine) or an event loop.
final class PostgresPool: Sendable {
    /// One connection, reachable only by the caller that took it.
    ///
    /// `@unchecked Sendable` is safe: a slot is in the idle list (behind the pool's mutex) or held
    /// by exactly one caller between `take` and `give`, never both, so no two threads use its
    /// connection at once.
    final class Slot: @unchecked Sendable {
        let connection: PostgresConnection
        init(_ connection: PostgresConnection) { self.connection = connection }
    }

    private struct Waiter {
        let id: UInt64
        /// Resumed with a slot handed over, or nil: a connection was closed and the waiter may open one.
        let continuation: CheckedContinuation<Slot?, any Error>
        /// Ends the wait at the deadline; cancelled when the waiter is served first.
        let timer: Task<Void, Never>
    }

    private struct State {
        var idle: [Slot] = []
        var open = 0
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
    }

    let size: Int
    private let state = Mutex(State())
    private let connect: @Sendable () throws -> PostgresConnection

    init(size: Int, connect: @escaping @Sendable () throws -> PostgresConnection) {
        precondition(size > 0, "a pool holds at least one connection")
        self.size = size
        self.connect = connect
    }

    /// Runs `body` on a connection of its own, on a Dispatch thread.
    ///
    /// - Throws: `StorageTrouble.busy` when every connection stayed in use until `deadline`, the
    ///   connect error when a new connection could not be opened, or what `body` throws.
    func run<Result: Sendable>(
        until deadline: ContinuousClock.Instant, _ body: @escaping @Sendable (PostgresConnection) throws -> Result
    ) async throws -> Result {
        let slot = try await self.take(until: deadline)
        let outcome: Swift.Result<Result, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Swift.Result { try body(slot.connection) })
            }
        }
        self.give(slot)
        return try outcome.get()
    }

    private enum Grant {
        case slot(Slot)
        case open
        case wait(UInt64)
    }

    private func take(until deadline: ContinuousClock.Instant) async throws -> Slot {
        while true {
            let slot = try await self.takeAny(until: deadline)
            if slot.connection.isAlive { return slot }
            // Its session ended while it sat idle (a server restart): never lend it.
            self.closed()
        }
    }

    private func takeAny(until deadline: ContinuousClock.Instant) async throws -> Slot {
        let grant: Grant = self.state.withLock { state in
            if let slot = state.idle.popLast() { return .slot(slot) }
            if state.open < self.size {
                state.open += 1
                return .open
            }
            state.nextWaiterID &+= 1
            return .wait(state.nextWaiterID)
        }
        switch grant {
        case .slot(let slot): return slot
        case .open: return try await self.open()
        case .wait(let id):
            if let slot = try await self.wait(id, until: deadline) { return slot }
            return try await self.open()
        }
    }

    /// Opens a connection the caller has already counted in `open`.
    private func open() async throws -> Slot {
        let opened: Swift.Result<PostgresConnection, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: Swift.Result { try self.connect() }) }
        }
        switch opened {
        case .success(let connection): return Slot(connection)
        case .failure(let error):
            self.closed()
            throw error
        }
    }

    private func wait(_ id: UInt64, until deadline: ContinuousClock.Instant) async throws -> Slot? {
        try await withCheckedThrowingContinuation { continuation in
            let timer = Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                guard !Task.isCancelled else { return }
                self.giveUp(id)
            }
            let immediate: Grant? = self.state.withLock { state in
                // A slot may have come back between the first look and now.
                if let slot = state.idle.popLast() { return .slot(slot) }
                if state.open < self.size {
                    state.open += 1
                    return .open
                }
                state.waiters.append(Waiter(id: id, continuation: continuation, timer: timer))
                return nil
            }
            switch immediate {
            case .slot(let slot)?:
                timer.cancel()
                continuation.resume(returning: slot)
            case .open?:
                timer.cancel()
                continuation.resume(returning: nil)
            case .wait?, nil:
                // A deadline that passed before the waiter was queued found nothing to remove.
                if ContinuousClock.now >= deadline { self.giveUp(id) }
            }
        }
    }

    /// Ends a wait at its deadline: every connection stayed in use. A waiter already served is left alone.
    private func giveUp(_ id: UInt64) {
        let waiter: Waiter? = self.state.withLock { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(throwing: StorageTrouble.busy)
    }

    /// Gives a connection back: to the longest waiter, or to the idle list; closed if it lost its server.
    private func give(_ slot: Slot) {
        guard slot.connection.isConnected, !slot.connection.isInTransaction else { return self.closed() }
        let waiter: Waiter? = self.state.withLock { state in
            guard !state.waiters.isEmpty else {
                state.idle.append(slot)
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.timer.cancel()
        waiter?.continuation.resume(returning: slot)
    }

    /// A counted connection is gone (closed, or never opened): a waiter may open one in its place.
    private func closed() {
        let waiter: Waiter? = self.state.withLock { state in
            guard !state.waiters.isEmpty else {
                state.open -= 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.timer.cancel()
        waiter?.continuation.resume(returning: nil)
    }

    /// Adds a connection opened before the pool (the one the migrations ran on).
    func seed(_ connection: PostgresConnection) {
        self.state.withLock { state in
            state.open += 1
            state.idle.append(Slot(connection))
        }
    }

    /// Closes the idle connections, so the next callers connect anew (after the server restarted,
    /// every idle connection is dead and would each cost a failed call to find out).
    func closeIdle() {
        self.state.withLock { state in
            state.open -= state.idle.count
            state.idle.removeAll()
        }
    }
}
