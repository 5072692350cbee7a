import NIOCore

/// One connection's requests, as a value: how many run, which wait for a slot, whether more may be
/// read, and when the connection may close. `RequestHandler` carries out the actions it returns.
///
/// At most `limit` requests of a connection run at once. One socket read can hold many frames, so
/// frames beyond the limit wait here, in arrival order (their bytes are already counted against
/// the memory budget), and no further read is asked for until they have all started.
///
/// A connection closes only once nothing runs or waits: after its input ended (the client shut
/// down its sending side, or the daemon is shutting down), after a connection-level error was
/// answered, or after the channel went away. A client that left does not stop the requests it
/// already sent that are running; they run to completion and their answers are dropped. Requests
/// of a client that left that had not started are not run.
struct RequestFlow<Request> {
    enum Phase: Equatable {
        /// Frames are read and run.
        case reading
        /// No more frames are taken (input ended, or a bad frame was answered); the requests read
        /// before still run and are answered, then the connection closes.
        case draining
        /// The channel is closed; running requests finish and their answers are dropped.
        case closed
    }

    let limit: Int
    private(set) var phase: Phase = .reading
    private(set) var running = 0
    private var waiting = CircularBuffer<Request>()
    /// A read the pipeline asked for while the connection had no free slot.
    private(set) var readHeld = false

    init(limit: Int) {
        precondition(limit > 0)
        self.limit = limit
    }

    var waitingCount: Int { self.waiting.count }

    /// Requests that still hold a slot or wait for one.
    var inFlight: Int { self.running + self.waiting.count }

    enum ReadAction: Equatable { case read, hold }

    /// The pipeline asks for the next socket read.
    mutating func readRequested() -> ReadAction {
        switch self.phase {
        case .reading:
            guard self.running < self.limit, self.waiting.isEmpty else {
                self.readHeld = true
                return .hold
            }
            return .read
        case .draining, .closed:
            // Nothing more is taken from this connection; reading on would only buffer bytes.
            return .hold
        }
    }

    enum FrameAction {
        case run(Request)
        /// Waits for a slot; it is handed back by `requestFinished`.
        case wait
        /// Not run: the connection stopped taking frames. Its bytes are the caller's to release.
        case drop(Request)
    }

    /// A frame was decoded.
    mutating func frameArrived(_ request: Request) -> FrameAction {
        switch self.phase {
        case .reading:
            guard self.running < self.limit else {
                self.waiting.append(request)
                return .wait
            }
            self.running += 1
            return .run(request)
        case .draining, .closed:
            return .drop(request)
        }
    }

    enum FinishAction {
        /// Write the answer; then start `next` (it takes the freed slot), ask for the held read, or
        /// close the drained connection.
        case answer(next: Request?, thenRead: Bool, thenClose: Bool)
        /// The channel is gone: drop the answer. `drained`: nothing of the connection runs any more.
        case drop(drained: Bool)
    }

    /// A running request's answer is ready.
    mutating func requestFinished() -> FinishAction {
        precondition(self.running > 0)
        switch self.phase {
        case .reading, .draining:
            if let next = self.waiting.popFirst() {
                return .answer(next: next, thenRead: false, thenClose: false)
            }
            self.running -= 1
            switch self.phase {
            case .reading:
                let resume = self.readHeld
                self.readHeld = false
                return .answer(next: nil, thenRead: resume, thenClose: false)
            case .draining, .closed:
                return .answer(next: nil, thenRead: false, thenClose: self.running == 0)
            }
        case .closed:
            self.running -= 1
            return .drop(drained: self.running == 0)
        }
    }

    enum StopAction: Equatable { case none, close }

    /// No more frames are taken: the input ended, or a connection-level error was answered.
    mutating func stopReading() -> StopAction {
        switch self.phase {
        case .reading:
            self.phase = .draining
            self.readHeld = false
            return self.running == 0 ? .close : .none
        case .draining, .closed:
            return .none
        }
    }

    /// The channel closed. Returns whether nothing runs any more (the connection is done), and the
    /// requests that waited for a slot, which are not run.
    mutating func channelClosed() -> (drained: Bool, dropped: [Request]) {
        self.phase = .closed
        self.readHeld = false
        let dropped = Array(self.waiting)
        self.waiting.removeAll()
        return (self.running == 0, dropped)
    }
}

extension RequestFlow.FrameAction: Equatable where Request: Equatable {}
extension RequestFlow.FinishAction: Equatable where Request: Equatable {}
