import PaymentsWire

/// What a connection's byte stream has done, as a value type the handler drives (hummingbird's
/// state machines): where frames begin and end, which frames need room in the memory budget, and
/// when a connection has kept the daemon waiting too long.
///
/// Time is passed in (nanoseconds of a monotonic clock), so tests drive it by hand. A started frame
/// is timed only while the daemon is waiting to read it: a pause the daemon made (a full budget,
/// a reader busy with earlier requests) is not the client's delay.
struct ConnectionGuard {
    struct Limits {
        var maxFrame: Int
        var frameTimeout: Duration
        var idleTimeout: Duration
    }

    /// A frame whose length arrived in the bytes just read.
    struct FrameStart: Equatable {
        /// Header and body.
        var size: Int
        /// Whether all of it arrived in the same bytes (it is in memory already).
        var arrivedWhole: Bool
    }

    enum Verdict: Equatable {
        case keep
        /// A frame started and did not finish arriving in time.
        case frameTimedOut
        /// Nothing in flight and nothing arriving for the idle timeout.
        case idle
    }

    private enum Position: Equatable {
        /// Between frames, or inside a header: the length bytes seen so far.
        case header([UInt8])
        case body(remaining: Int)
        /// After a length the decoder refuses: it answers and closes the connection, nothing to track.
        case refused
    }

    let limits: Limits
    private var position = Position.header([])
    private var waitedForFrame: Duration = .zero
    /// When the current frame's first byte arrived: its wait starts there, not at the tick before.
    private var frameBegan: Duration?
    private var lastActivity: Duration
    private var lastTick: Duration
    /// Whether the daemon asked the socket for bytes and has not had them yet.
    var readOutstanding = false
    /// Whether the daemon holds reads back itself (the frame waits for room in the budget).
    var paused = false

    init(limits: Limits, now: Duration) {
        self.limits = limits
        self.lastActivity = now
        self.lastTick = now
    }

    /// Whether part of a frame has arrived and the rest has not.
    var inFrame: Bool {
        switch self.position {
        case .header(let seen): !seen.isEmpty
        case .body: true
        case .refused: false
        }
    }

    /// Follows `bytes` through the framing; returns each frame whose length they completed.
    mutating func arrived(_ bytes: some Collection<UInt8>, now: Duration) -> [FrameStart] {
        self.lastActivity = now
        var starts: [FrameStart] = []
        var index = bytes.startIndex
        while index != bytes.endIndex {
            switch self.position {
            case .refused:
                return starts
            case .header(var seen):
                if seen.isEmpty { self.frameBegan = now }
                seen.append(bytes[index])
                index = bytes.index(after: index)
                guard seen.count == Frame.headerSize else {
                    self.position = .header(seen)
                    continue
                }
                let length = seen.reduce(0) { $0 << 8 | Int($1) }
                guard length > 0, length <= self.limits.maxFrame else {
                    self.position = .refused
                    return starts
                }
                let available = bytes.distance(from: index, to: bytes.endIndex)
                starts.append(FrameStart(size: Frame.headerSize + length, arrivedWhole: available >= length))
                self.position = .body(remaining: length)
            case .body(let remaining):
                let available = bytes.distance(from: index, to: bytes.endIndex)
                let taken = min(remaining, available)
                index = bytes.index(index, offsetBy: taken)
                if taken == remaining {
                    self.position = .header([])
                    self.waitedForFrame = .zero
                    self.frameBegan = nil
                } else {
                    self.position = .body(remaining: remaining - taken)
                }
            }
        }
        return starts
    }

    /// An answer went out: the connection's quiet time starts now, not at the last tick.
    mutating func answered(now: Duration) {
        self.lastActivity = now
    }

    /// Called at regular intervals with whether requests of the connection are still held (read and
    /// not answered): they keep it from being idle.
    mutating func tick(now: Duration, requestsHeld: Bool) -> Verdict {
        let elapsed = now - max(self.lastTick, self.frameBegan ?? self.lastTick)
        self.lastTick = now
        if self.inFrame {
            if self.readOutstanding && !self.paused { self.waitedForFrame += elapsed }
            return self.waitedForFrame >= self.limits.frameTimeout ? .frameTimedOut : .keep
        }
        if requestsHeld {
            self.lastActivity = now
            return .keep
        }
        return now - self.lastActivity >= self.limits.idleTimeout ? .idle : .keep
    }
}
