import PaymentsEngine
import PaymentsTesting
import Testing

private func later(_ milliseconds: Int) -> ContinuousClock.Instant { .now + .milliseconds(milliseconds) }

@Suite struct KeyedLockTableTests {
    @Test func mutualExclusion_underHeavyContention_andTheTableEmptiesAfterwards() async throws {
        let table = KeyedLockTable<Int>()
        let inside = Shared([Int: Int]())
        let overlaps = Shared(0)
        let totals = Shared([Int: Int]())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<2000 {
                group.addTask {
                    let key = task % 8
                    try await table.withLock(key, deadline: later(30_000)) {
                        let before = inside.withLock { state -> Int in
                            state[key, default: 0] += 1
                            return state[key]!
                        }
                        if before > 1 { overlaps.withLock { $0 += 1 } }
                        await Task.yield()
                        totals.withLock { $0[key, default: 0] += 1 }
                        inside.withLock { $0[key]! -= 1 }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(overlaps.value == 0)
        #expect(totals.value.values.reduce(0, +) == 2000)
        #expect(table.trackedKeyCount == 0)
    }

    @Test func waitersAreServedInArrivalOrder() async throws {
        let table = KeyedLockTable<String>()
        let order = Shared([Int]())
        let (release, releaseNow) = AsyncStream<Void>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (held, heldNow) = AsyncStream<Void>.makeStream()
            group.addTask {
                try await table.withLock("deal", deadline: later(30_000)) {
                    heldNow.yield()
                    for await _ in release { break }
                }
            }
            for await _ in held { break }
            for index in 0..<20 {
                group.addTask {
                    try await table.withLock("deal", deadline: later(30_000)) { order.withLock { $0.append(index) } }
                }
                // Wait until this waiter is queued before the next one arrives.
                while table.waiterCount("deal") < index + 1 { await Task.yield() }
            }
            releaseNow.yield()
            try await group.waitForAll()
        }
        #expect(order.value == Array(0..<20))
        #expect(table.trackedKeyCount == 0)
    }

    @Test func waitEndsWithLockTimeout_atTheDeadline_andLeavesNoTrace() async throws {
        let table = KeyedLockTable<String>()
        let (release, releaseNow) = AsyncStream<Void>.makeStream()
        let (held, heldNow) = AsyncStream<Void>.makeStream()
        async let holder: Void = table.withLock("deal", deadline: later(30_000)) {
            heldNow.yield()
            for await _ in release { break }
        }
        for await _ in held { break }
        let started = ContinuousClock.now
        await #expect(throws: LockTimeout.self) {
            try await table.withLock("deal", deadline: later(50)) { Issue.record("must not run") }
        }
        #expect(ContinuousClock.now - started >= .milliseconds(50))
        #expect(table.waiterCount("deal") == 0)
        releaseNow.yield()
        try await holder
        #expect(table.trackedKeyCount == 0)
        // The key works again after the timed-out waiter left.
        let value = try await table.withLock("deal", deadline: later(1000)) { 42 }
        #expect(value == 42)
    }

    @Test func cancelledWaiter_leavesTheQueue() async throws {
        let table = KeyedLockTable<String>()
        let (release, releaseNow) = AsyncStream<Void>.makeStream()
        let (held, heldNow) = AsyncStream<Void>.makeStream()
        async let holder: Void = table.withLock("deal", deadline: later(30_000)) {
            heldNow.yield()
            for await _ in release { break }
        }
        for await _ in held { break }
        let waiter = Task { try await table.withLock("deal", deadline: later(30_000)) {} }
        while table.waiterCount("deal") < 1 { await Task.yield() }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(table.waiterCount("deal") == 0)
        releaseNow.yield()
        try await holder
        #expect(table.trackedKeyCount == 0)
    }

    @Test func errorsInTheBody_releaseTheKey() async throws {
        struct Boom: Error {}
        let table = KeyedLockTable<String>()
        await #expect(throws: Boom.self) {
            try await table.withLock("deal", deadline: later(1000)) { throw Boom() }
        }
        #expect(table.trackedKeyCount == 0)
    }

    @Test func twoKeysInAFixedOrder_neverDeadlock() async throws {
        let table = KeyedLockTable<String>()
        let counter = Shared(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<500 {
                group.addTask {
                    // customer before deal, nested, as every caller must
                    try await table.withLock("customer:c\(task % 3)", deadline: later(30_000)) {
                        try await table.withLock("deal:d\(task % 5)", deadline: later(30_000)) {
                            await Task.yield()
                            counter.withLock { $0 += 1 }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(counter.value == 500)
        #expect(table.trackedKeyCount == 0)
    }
}
