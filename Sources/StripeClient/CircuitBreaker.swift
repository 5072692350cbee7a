import Synchronization

/// Stops calling Stripe for a while after repeated failures, then lets one probe through.
///
/// A value type of pure transitions (tested with a manual clock) kept in a
/// `Mutex` by `StripeClient`.
public struct CircuitBreaker: Sendable {
    public enum State: Sendable, Equatable {
        case closed(consecutiveFailures: Int)
        /// Calls fail fast until `until`.
        case open(until: ContinuousClock.Instant)
        /// One probe is in flight; other calls fail fast until it reports.
        case probing
    }

    public let failureThreshold: Int
    public let coolDown: Duration
    public private(set) var state: State = .closed(consecutiveFailures: 0)

    public init(failureThreshold: Int = 5, coolDown: Duration = .seconds(5)) {
        self.failureThreshold = failureThreshold
        self.coolDown = coolDown
    }

    /// Whether a call may go to Stripe now; taking the probe slot when the cool-down is over.
    public mutating func allowCall(now: ContinuousClock.Instant) -> Bool {
        switch self.state {
        case .closed: return true
        case .open(let until):
            guard now >= until else { return false }
            self.state = .probing
            return true
        case .probing: return false
        }
    }

    /// Stripe answered (success or a definite refusal): it is reachable.
    public mutating func recordSuccess() { self.state = .closed(consecutiveFailures: 0) }

    /// A call ended without a usable answer after its retries.
    public mutating func recordFailure(now: ContinuousClock.Instant) {
        switch self.state {
        case .closed(let failures):
            self.state =
                failures + 1 >= self.failureThreshold
                ? .open(until: now + self.coolDown) : .closed(consecutiveFailures: failures + 1)
        case .probing, .open:
            self.state = .open(until: now + self.coolDown)
        }
    }
}
