@testable import PaymentsRPC
import PaymentsTesting
import Testing

/// The memory budget: whole frames admitted against both bounds, waits woken by answers, and
/// nothing left held by a connection that went.
@Suite struct MemoryBudgetTests {
    private func admit(_ account: MemoryBudget.Account, _ bytes: Int, _ wakeup: @escaping @Sendable () -> Void = {}) -> Bool {
        account.admit(bytes, wakeup: wakeup)
    }

    @Test func aFrameThatDoesNotFit_waitsUntilAnAnswerFreesRoom() {
        let budget = MemoryBudget(limit: 100)
        let first = budget.account(limit: 100)
        let second = budget.account(limit: 100)
        let woken = Shared(0)
        #expect(admit(first, 80))
        let wakeup: @Sendable () -> Void = { woken.withLock { $0 += 1 } }
        #expect(!admit(second, 30, wakeup))
        first.release(80)
        #expect(woken.withLock { $0 } == 1)
        #expect(admit(second, 30))
        #expect(budget.held == 30)
    }

    @Test func theConnectionBound_holdsBeforeTheServers() {
        let budget = MemoryBudget(limit: 1000)
        let account = budget.account(limit: 100)
        let woken = Shared(false)
        #expect(admit(account, 60))
        let wakeup: @Sendable () -> Void = { woken.withLock { $0 = true } }
        #expect(!admit(account, 60, wakeup))
        account.release(60)
        #expect(woken.withLock { $0 })
        #expect(admit(account, 60))
    }

    @Test func aFrameLargerThanTheBudget_isAdmittedAlone() {
        let budget = MemoryBudget(limit: 100)
        let account = budget.account(limit: 50)
        #expect(admit(account, 500))
        #expect(!admit(account, 1))
    }

    @Test func aClosedConnection_givesBackWhatItHeld_andDrainIsReported() {
        let drained = Shared(0)
        let budget = MemoryBudget(limit: 100, drainReportThreshold: 50, onDrained: { drained.withLock { $0 += 1 } })
        let account = budget.account(limit: 100)
        account.charge(40)
        #expect(admit(account, 40))
        account.release(40)
        account.close()
        #expect(budget.held == 0)
        #expect(drained.withLock { $0 } == 1)
        // Late answers of a closed connection change nothing.
        account.release(40)
        #expect(budget.held == 0)
    }
}
