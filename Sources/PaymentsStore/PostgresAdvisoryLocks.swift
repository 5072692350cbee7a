import Dispatch
import Synchronization

/// Locks shared by every paymentsd on one PostgreSQL database: session-level advisory locks, one
/// per deal or customer key, held on one connection of this process for as long as the operation
/// runs, its Stripe call included, with no transaction open across it.
///
/// Why a session lock on a connection of its own: a transaction-level lock would need a
/// transaction open across the Stripe call; a session lock is released by the server the moment a
/// crashed host's connection drops, so another host's janitor can take the deal over.
///
/// The in-process `KeyedLockTable` orders this process's own waiters and lets only one of them ask
/// here for a key, so a key is never taken twice on this session (advisory locks count re-entries).
/// Waiting is a try-lock every few milliseconds until the caller's deadline: the connection is
/// shared by every lock of the process and must never block on one of them.
public final class PostgresAdvisoryLocks: Sendable {
    /// A lock this process holds; given back to `unlock`.
    public struct Lease: Sendable {
        let key: Int64
        /// The session it was taken on: if that connection was lost, so was the lock.
        let session: UInt64
        /// The server process of that session, as `pg_locks` names the holder.
        let backendPID: Int64
    }

    /// The leases the current task holds (set by the lock table around a holder's body). Each
    /// write of the task checks, in its own transaction, that the server still grants them: a lock
    /// lost with its session (a server restart in the middle of an operation) would otherwise let
    /// another host into the deal while this one still writes as if it held it.
    @TaskLocal public static var held: [Lease] = []

    /// The key the migrations serialise on, when daemons of several hosts start at once.
    static let migrationKey = PostgresAdvisoryLocks.key("paymentsd:schema_migrations")

    /// The lock connection, touched only on `queue`.
    ///
    /// `@unchecked Sendable` is safe: `connection` and `session` are read and written only in blocks
    /// running on `queue`, a serial queue.
    private final class Session: @unchecked Sendable {
        var connection: PostgresConnection?
        var session: UInt64 = 0
        var backendPID: Int64 = 0
    }

    private let queue = DispatchQueue(label: "paymentsd.store.advisory-locks")
    private let current = Session()
    private let connect: @Sendable () throws -> PostgresConnection
    private let classify: @Sendable (any Error) -> any Error

    init(connect: @escaping @Sendable () throws -> PostgresConnection, classify: @escaping @Sendable (any Error) -> any Error) {
        self.connect = connect
        self.classify = classify
    }

    /// Takes `name` for this process when no other paymentsd holds it now; nil when one does.
    public func lockIfFree(_ name: String) async throws -> Lease? {
        let key = Self.key(name)
        return try await self.onSession { connection, session, backendPID in
            let taken = try connection.queryFirst("SELECT pg_try_advisory_lock(?)", key)!.int64(0) == 1
            return taken ? Lease(key: key, session: session, backendPID: backendPID) : nil
        }
    }

    /// Takes `name`, waiting for another paymentsd to let it go; nil when `deadline` passed first.
    public func lock(_ name: String, until deadline: ContinuousClock.Instant) async throws -> Lease? {
        var pause = Duration.milliseconds(2)
        while true {
            if let lease = try await self.lockIfFree(name) { return lease }
            let now = ContinuousClock.now
            guard now < deadline else { return nil }
            try await Task.sleep(until: min(now + pause, deadline), clock: .continuous)
            pause = min(pause * 2, .milliseconds(50))
        }
    }

    /// Lets `lease` go. A lease of a session that was lost needs nothing: the server let it go then.
    public func unlock(_ lease: Lease) async {
        _ = try? await self.onSession { connection, session, _ in
            guard session == lease.session else { return }
            try connection.query("SELECT pg_advisory_unlock(?)", lease.key)
        }
    }

    /// Runs `body` on the lock connection, connecting first if there is none; a connection that
    /// fails is dropped with every lock it held (the server has let them go).
    private func onSession<Result: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection, _ session: UInt64, _ backendPID: Int64) throws -> Result
    ) async throws -> Result {
        let outcome: Swift.Result<Result, any Error> = await withCheckedContinuation { continuation in
            self.queue.async {
                continuation.resume(
                    returning: Swift.Result {
                        let current = self.current
                        if current.connection?.isAlive == false { current.connection = nil }
                        if current.connection == nil {
                            let connection = try self.connect()
                            current.backendPID = try connection.queryFirst("SELECT pg_backend_pid()")!.int64(0)
                            current.connection = connection
                            current.session &+= 1
                        }
                        do {
                            return try body(current.connection!, current.session, current.backendPID)
                        } catch {
                            if current.connection?.isConnected != true { current.connection = nil }
                            throw error
                        }
                    })
            }
        }
        do {
            return try outcome.get()
        } catch {
            throw self.classify(error)
        }
    }

    /// Throws unless the server still grants every lease to the session that took it. Runs inside
    /// the caller's write transaction, so a write never commits under a lock that is gone.
    static func verify(_ leases: [Lease], on db: any Connection) throws {
        for lease in leases {
            // pg_locks shows a bigint key as two 32-bit halves, classid the high one.
            let high = Int64(UInt32(truncatingIfNeeded: lease.key >> 32))
            let low = Int64(UInt32(truncatingIfNeeded: lease.key))
            let granted = try db.queryFirst(
                """
                SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND pid = ? AND classid::bigint = ? AND objid::bigint = ?
                  AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                """, lease.backendPID, high, low)!.int64(0)
            guard granted == 1 else {
                throw StorageTrouble.unreachable("a lock of this operation ended with its database session; it is resumed later")
            }
        }
    }

    /// The 64-bit advisory lock key of a name: FNV-1a, so every host computes the same one. Two
    /// names that collide only serialise each other, which costs waiting, never correctness.
    static func key(_ name: String) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }
}
