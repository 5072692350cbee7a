@testable import PaymentsRPC
import Testing


/// One connection's request flow as a value: frames beyond the limit wait in order and take the
/// slots that answers free, reads are held while no slot is free, a drained connection closes
/// only after its last answer, and answers are dropped once the channel is gone.
@Suite struct RequestFlowTests {
    /// Applies `step` to `flow` and returns what it said (`#expect` cannot call a mutating method).
    private func step<T>(_ flow: inout RequestFlow<Int>, _ step: (inout RequestFlow<Int>) -> T) -> T {
        step(&flow)
    }

    @Test func framesBeyondTheLimit_waitInOrder_andTakeTheSlotsAnswersFree() {
        var flow = RequestFlow<Int>(limit: 2)
        #expect(step(&flow) { $0.frameArrived(1) } == .run(1))
        #expect(step(&flow) { $0.frameArrived(2) } == .run(2))
        // One read held three more frames: they wait, and nothing more is read meanwhile.
        #expect(step(&flow) { $0.frameArrived(3) } == .wait)
        #expect(step(&flow) { $0.frameArrived(4) } == .wait)
        #expect(step(&flow) { $0.readRequested() } == .hold)
        #expect(flow.running == 2 && flow.waitingCount == 2)
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: 3, thenRead: false, thenClose: false))
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: 4, thenRead: false, thenClose: false))
        #expect(flow.running == 2 && flow.waitingCount == 0)
        // The read held while the slots were taken is asked for once a slot is free.
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: nil, thenRead: true, thenClose: false))
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: nil, thenRead: false, thenClose: false))
        #expect(step(&flow) { $0.readRequested() } == .read)
    }

    @Test func belowTheLimit_readsAreNotHeld() {
        var flow = RequestFlow<Int>(limit: 2)
        #expect(step(&flow) { $0.frameArrived(1) } == .run(1))
        #expect(step(&flow) { $0.readRequested() } == .read)
        #expect(!flow.readHeld)
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: nil, thenRead: false, thenClose: false))
    }

    @Test func inputEnded_framesReadBeforeStillRun_andTheConnectionClosesAfterTheLastAnswer() {
        var flow = RequestFlow<Int>(limit: 1)
        #expect(step(&flow) { $0.frameArrived(1) } == .run(1))
        #expect(step(&flow) { $0.frameArrived(2) } == .wait)
        #expect(step(&flow) { $0.stopReading() } == .none)
        #expect(flow.phase == .draining)
        // Frames after the end (or after a bad frame) are not run, and nothing more is read.
        #expect(step(&flow) { $0.frameArrived(3) } == .drop(3))
        #expect(step(&flow) { $0.readRequested() } == .hold)
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: 2, thenRead: false, thenClose: false))
        #expect(step(&flow) { $0.requestFinished() } == .answer(next: nil, thenRead: false, thenClose: true))
    }

    @Test func inputEnded_withNothingInFlight_closesAtOnce_andOnlyOnce() {
        var flow = RequestFlow<Int>(limit: 4)
        #expect(step(&flow) { $0.stopReading() } == .close)
        #expect(step(&flow) { $0.stopReading() } == .none)
    }

    @Test func channelClosed_runningRequestsFinishUnanswered_andWaitingOnesAreNotRun() {
        var flow = RequestFlow<Int>(limit: 2)
        #expect(step(&flow) { $0.frameArrived(1) } == .run(1))
        #expect(step(&flow) { $0.frameArrived(2) } == .run(2))
        #expect(step(&flow) { $0.frameArrived(3) } == .wait)
        let closed = step(&flow) { $0.channelClosed() }
        #expect(!closed.drained && closed.dropped == [3])
        #expect(step(&flow) { $0.frameArrived(4) } == .drop(4))
        #expect(step(&flow) { $0.stopReading() } == .none)
        #expect(step(&flow) { $0.requestFinished() } == .drop(drained: false))
        #expect(step(&flow) { $0.requestFinished() } == .drop(drained: true))
    }

    @Test func channelClosed_withNothingInFlight_isDoneAtOnce() {
        var flow = RequestFlow<Int>(limit: 4)
        let closed = step(&flow) { $0.channelClosed() }
        #expect(closed.drained && closed.dropped.isEmpty)
    }
}
