import CCurl
import Synchronization

/// libcurl easy handles kept between calls, and the bound on calls in flight.
///
/// An easy handle keeps its connections (and TLS sessions) open after a transfer, so a reused
/// handle sends the next call on a warm connection instead of paying a TCP and TLS handshake for
/// every checkout and refund. `curl_easy_reset` clears a handle's options and keeps its
/// connections. At most `limit` calls hold a handle; the rest wait, suspended in their task,
/// for one to come back: the calls blocked in `curl_easy_perform` (each on a thread) are bounded.
final class CurlHandlePool: Sendable {
    /// A checked-out or idle easy handle.
    ///
    /// `@unchecked Sendable` is safe because a handle is only ever used by its one holder: the pool
    /// while idle (under its mutex), or the single call that checked it out until it is given back.
    /// libcurl requires exactly that: an easy handle must not be used by two threads at once.
    struct Handle: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
    }

    private struct State {
        var idle: [Handle] = []
        var created = 0
        var waiters: [CheckedContinuation<Handle, Never>] = []
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        precondition(limit > 0)
        self.limit = limit
    }

    deinit {
        let handles = self.state.withLock { $0.idle }
        for handle in handles { curl_easy_cleanup(handle.pointer) }
    }

    /// A handle for one call, reset; waits for one when `limit` calls hold theirs.
    func checkOut() async throws -> Handle {
        enum Got { case handle(Handle), create, wait }
        let got: Got = self.state.withLock { state in
            if let handle = state.idle.popLast() { return .handle(handle) }
            if state.created < self.limit {
                state.created += 1
                return .create
            }
            return .wait
        }
        switch got {
        case .handle(let handle):
            curl_easy_reset(handle.pointer)
            return handle
        case .create:
            guard let pointer = curl_easy_init() else {
                self.state.withLock { $0.created -= 1 }
                throw NetworkError(code: -1, message: "curl_easy_init failed")
            }
            return Handle(pointer: pointer)
        case .wait:
            let handle = await withCheckedContinuation { continuation in
                let ready: Handle? = self.state.withLock { state in
                    if let handle = state.idle.popLast() { return handle }
                    state.waiters.append(continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
            curl_easy_reset(handle.pointer)
            return handle
        }
    }

    /// Gives a handle back: to the longest waiting call, or to the idle ones.
    func checkIn(_ handle: Handle) {
        let waiter: CheckedContinuation<Handle, Never>? = self.state.withLock { state in
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.idle.append(handle)
            return nil
        }
        waiter?.resume(returning: handle)
    }
}
