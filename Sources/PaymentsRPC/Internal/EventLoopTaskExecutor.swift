import NIOCore

/// Runs a connection's tasks on that connection's event loop.
///
/// A request is read on the loop; with this executor its handler, and every resumption after an
/// await (a write's commit, a lock), runs there too, and its answer is written there without a
/// hop. Without it, each call crosses from the loop to Swift's pool and back: two thread wake-ups
/// per call, most of the daemon's time at one connection (BENCHMARKS.md, issue 13). A job enqueued
/// from the loop itself joins the loop's queue and runs in the same tick, with no wake-up.
///
/// Nothing a handler awaits blocks its thread: SQLite writes and libcurl run on dispatch queues of
/// their own, and a read from the page cache is shorter than the hop it saves (`ReaderPool`).
final class EventLoopTaskExecutor: TaskExecutor {
    private let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
