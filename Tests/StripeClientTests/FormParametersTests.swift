import StripeClient
import Testing

@Suite struct FormParametersTests {
    @Test func nestedKeys_andReservedCharacters_areEscaped() {
        var form = FormParameters()
        form.add("line_items[0][price_data][unit_amount]", 500)
        form.add("success_url", "https://shop.example/ok?x=1&y=ä b")
        let text = String(decoding: form.encoded(), as: UTF8.self)
        #expect(
            text == "line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=500"
                + "&success_url=https%3A%2F%2Fshop.example%2Fok%3Fx%3D1%26y%3D%C3%A4%20b")
    }

    @Test func orderIsKept() {
        var form = FormParameters()
        form.add("b", "2")
        form.add("a", "1")
        #expect(form.queryString == "b=2&a=1")
    }
}

/// Asks the breaker outside `#expect`, whose closure cannot mutate.
private func allows(_ breaker: inout CircuitBreaker, at instant: ContinuousClock.Instant) -> Bool {
    breaker.allowCall(now: instant)
}

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
