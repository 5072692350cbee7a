import StripeClient
import Testing

@Suite struct CircuitBreakerTests {
    @Test func opensAfterTheThreshold_thenLetsOneProbeThroughAfterTheCoolDown() {
        var breaker = CircuitBreaker(failureThreshold: 3, coolDown: .seconds(5))
        let start = ContinuousClock.now
        var answers: [Bool] = []
        for _ in 0..<3 {
            answers.append(allows(&breaker, at: start))
            breaker.recordFailure(now: start)
        }
        #expect(answers == [true, true, true])
        #expect(breaker.state == .open(until: start + .seconds(5)))
        let duringCoolDown = allows(&breaker, at: start + .seconds(4))
        let probe = allows(&breaker, at: start + .seconds(5))
        let secondProbe = allows(&breaker, at: start + .seconds(5))
        #expect(!duringCoolDown && probe && !secondProbe)
        breaker.recordSuccess()
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        let afterRecovery = allows(&breaker, at: start + .seconds(5))
        #expect(afterRecovery)
    }

    @Test func aFailedProbe_reopensForAnotherCoolDown() {
        var breaker = CircuitBreaker(failureThreshold: 1, coolDown: .seconds(5))
        let start = ContinuousClock.now
        breaker.recordFailure(now: start)
        let probe = allows(&breaker, at: start + .seconds(6))
        #expect(probe)
        breaker.recordFailure(now: start + .seconds(6))
        #expect(breaker.state == .open(until: start + .seconds(11)))
    }

    @Test func successesInBetween_resetTheCount() {
        var breaker = CircuitBreaker(failureThreshold: 2, coolDown: .seconds(5))
        let now = ContinuousClock.now
        breaker.recordFailure(now: now)
        breaker.recordSuccess()
        breaker.recordFailure(now: now)
        #expect(breaker.state == .closed(consecutiveFailures: 1))
    }
}

/// Asks the breaker outside `#expect`, whose closure cannot mutate.
private func allows(_ breaker: inout CircuitBreaker, at instant: ContinuousClock.Instant) -> Bool {
    breaker.allowCall(now: instant)
}
