@testable import PaymentsRPC
import Testing

/// The connection guard's decisions, driven by hand: where frames start, what needs room, and when a
/// half-sent frame or an idle connection is cut off (only the client's delay counts).
@Suite struct ConnectionGuardTests {
    static let limits = ConnectionGuard.Limits(maxFrame: 1000, frameTimeout: .seconds(10), idleTimeout: .seconds(60))

    static func header(_ length: Int) -> [UInt8] {
        [UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
    }

    @Test func framesInOneRead_areSeenWhole_andAFrameCutAtTheEnd_needsRoom() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        let bytes = Self.header(3) + [1, 2, 3] + Self.header(500) + [9, 9]
        let starts = guardState.arrived(bytes, now: .zero)
        #expect(starts == [.init(size: 7, arrivedWhole: true), .init(size: 504, arrivedWhole: false)])
        #expect(guardState.inFrame)
        #expect(guardState.arrived([UInt8](repeating: 0, count: 498), now: .zero) == [])
        #expect(!guardState.inFrame)
    }

    @Test func aHeaderSplitAcrossReads_isFollowed() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        #expect(guardState.arrived(Self.header(2).prefix(2), now: .zero) == [])
        #expect(guardState.inFrame)
        #expect(guardState.arrived(Self.header(2).suffix(2) + [7, 7], now: .zero) == [.init(size: 6, arrivedWhole: true)])
        #expect(!guardState.inFrame)
    }

    @Test func aLengthTheDecoderRefuses_reservesNothing() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        #expect(guardState.arrived(Self.header(1001) + [1, 2], now: .zero) == [])
        #expect(guardState.arrived(Self.header(0), now: .zero) == [])
        #expect(!guardState.inFrame)
    }

    @Test func aHalfSentFrame_timesOut_onlyWhileTheDaemonWaitsForIt() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        _ = guardState.arrived([0, 0], now: .zero)
        // The daemon is not reading (its reader is busy): the client is not late.
        guardState.readOutstanding = false
        #expect(guardState.tick(now: .seconds(30), requestsHeld: true) == .keep)
        // Paused for the budget: not the client's delay either.
        guardState.readOutstanding = true
        guardState.paused = true
        #expect(guardState.tick(now: .seconds(60), requestsHeld: true) == .keep)
        guardState.paused = false
        #expect(guardState.tick(now: .seconds(69), requestsHeld: false) == .keep)
        #expect(guardState.tick(now: .seconds(70), requestsHeld: false) == .frameTimedOut)
    }

    @Test func aFrameThatKeepsTrickling_stillTimesOut() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        guardState.readOutstanding = true
        _ = guardState.arrived(Self.header(100), now: .zero)
        for second in 1...9 {
            _ = guardState.arrived([0], now: .seconds(second))
            #expect(guardState.tick(now: .seconds(second), requestsHeld: false) == .keep)
        }
        _ = guardState.arrived([0], now: .seconds(10))
        #expect(guardState.tick(now: .seconds(10), requestsHeld: false) == .frameTimedOut)
    }

    @Test func aConnectionIsIdle_onlyWithNothingInFlight() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        guardState.readOutstanding = true
        _ = guardState.arrived(Self.header(1) + [1], now: .zero)
        // A request that takes long keeps its connection.
        #expect(guardState.tick(now: .seconds(100), requestsHeld: true) == .keep)
        #expect(guardState.tick(now: .seconds(159), requestsHeld: false) == .keep)
        #expect(guardState.tick(now: .seconds(160), requestsHeld: false) == .idle)
    }
}

extension ConnectionGuardTests {
    @Test func aFramesWait_startsAtItsFirstByte_notAtTheTickBefore() {
        var guardState = ConnectionGuard(limits: Self.limits, now: .zero)
        guardState.readOutstanding = true
        #expect(guardState.tick(now: .seconds(5), requestsHeld: false) == .keep)
        _ = guardState.arrived([0], now: .seconds(8))
        #expect(guardState.tick(now: .seconds(17), requestsHeld: false) == .keep)
        #expect(guardState.tick(now: .seconds(18), requestsHeld: false) == .frameTimedOut)
    }
}
