import Synchronization

/// Counts a connection's requests in flight and makes the reader wait at the bound.
///
/// While the reader waits it pulls no frames, the inbound buffer fills to its
/// high watermark, and NIO stops reading the socket: back-pressure reaches
/// the client through the kernel's buffers, and no request is dropped.
final class InFlightLimiter: Sendable {
    private struct State {
        var available: Int
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state: Mutex<State>

    init(limit: Int) {
        precondition(limit > 0)
        self.state = Mutex(State(available: limit))
    }

    /// Takes a slot, waiting for one if none is free. Only the connection's reader calls this.
    func acquire() async {
        let acquired = self.state.withLock { state in
            guard state.available > 0 else { return false }
            state.available -= 1
            return true
        }
        guard !acquired else { return }
        await withCheckedContinuation { continuation in
            let now: Bool = self.state.withLock { state in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Frees a slot; if the reader waits, the slot goes straight to it.
    func release() {
        let waiter: CheckedContinuation<Void, Never>? = self.state.withLock { state in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.available += 1
            return nil
        }
        waiter?.resume()
    }
}
