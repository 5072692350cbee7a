import PaymentsDomain
import PaymentsStore

extension KeyedLockTable where Key == String {
    /// The lock key of a deal; customers (subscriptions) are locked before deals.
    static func dealKey(_ dealID: String) -> String { "deal:\(dealID)" }

    /// Runs `body` holding the deal's lock, the one every command on a deal takes; a deadline
    /// passed while waiting is `lockTimeout`.
    func withDealLock<Result: Sendable>(
        _ dealID: String, deadline: ContinuousClock.Instant, _ body: () async throws -> Result
    ) async throws -> Result {
        do {
            return try await self.withLock(Self.dealKey(dealID), deadline: deadline, body)
        } catch is LockTimeout {
            throw PaymentsError.lockTimeout
        }
    }

    /// Runs `body` holding the deal's lock when it is free now; nil when another command holds it
    /// or waits for it.
    func withDealLockIfFree<Result: Sendable>(_ dealID: String, _ body: () async throws -> Result) async throws
        -> Result?
    {
        try await self.withLockIfFree(Self.dealKey(dealID), body)
    }
}
