import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PaymentsClient
import PaymentsEngine
import PaymentsRPC
import PaymentsService
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient

/// `make bench`: Health round trips against a raw Unix-socket echo of the
/// same frame, measured in the same run, so the figures read as a ratio to
/// what the transport alone can do on this machine.
let seconds = Double(ProcessInfo.processInfo.environment["BENCH_SECONDS"] ?? "") ?? 3

let healthFrame = Frame.encode(RequestEnvelope(requestID: 1, method: MethodName.health.fullName).serialized())

struct Result {
    let roundTrips: Int
    let elapsed: Double
    let latenciesNS: [UInt64]

    var perSecond: Double { Double(self.roundTrips) / self.elapsed }
    func percentile(_ p: Double) -> Double {
        let sorted = self.latenciesNS.sorted()
        guard !sorted.isEmpty else { return 0 }
        return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
    }
}

enum Mode {
    /// Bytes echoed back as they are: the transport's limit.
    case rawEcho
    /// A real Health call through framing, decoding, dispatch and the store.
    case health
}

/// Runs `connections` client threads for `seconds`, each sending `depth` requests before reading their answers.
func measure(_ mode: Mode, socket: String, connections: Int, depth: Int) async -> Result {
    let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
    let collected = Shared((total: 0, latencies: [UInt64](), running: connections))
    let start = DispatchTime.now().uptimeNanoseconds
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        for _ in 0..<connections {
            Thread.detachNewThread {
                var count = 0
                var local: [UInt64] = []
                do {
                    let connection = try PaymentsConnection(path: socket)
                    let batch = Array([[UInt8]](repeating: healthFrame, count: depth).joined())
                    while DispatchTime.now().uptimeNanoseconds < deadline {
                        let sent = DispatchTime.now().uptimeNanoseconds
                        try connection.write(batch)
                        for _ in 0..<depth {
                            switch mode {
                            case .rawEcho: _ = try connection.receiveFrame()
                            case .health:
                                let response = try connection.receive()
                                precondition(response.status.code == .ok, "Health failed: \(response.status)")
                            }
                        }
                        let now = DispatchTime.now().uptimeNanoseconds
                        local.append(now - sent)
                        count += depth
                    }
                } catch {
                    fatalError("benchmark client failed: \(error)")
                }
                let last = collected.withLock { state -> Bool in
                    state.total += count
                    state.latencies.append(contentsOf: local)
                    state.running -= 1
                    return state.running == 0
                }
                if last { done.resume() }
            }
        }
    }
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return Result(roundTrips: collected.value.total, elapsed: elapsed, latenciesNS: collected.value.latencies)
}

final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}
let directory = TemporaryDirectory()
let echoPath = directory.file("echo.sock")
let echo = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
    }
    .bind(unixDomainSocketPath: echoPath).get()

let store = try Store(path: directory.file("bench.db"))
let metrics = RequestMetrics()
let locks = KeyedLockTable<String>()
// Health never calls Stripe; the client only completes the wiring.
let stripe = StripeClient(configuration: .init(baseURL: "http://127.0.0.1:9", secretKey: "sk_test_bench"))
let checkout = CheckoutEngine(
    store: store, stripe: stripe, locks: locks, configuration: .init(), logger: Logger(label: "bench"))
let table = PaymentsMethods(store: store, metrics: metrics, checkout: checkout, locks: locks).table()
let machine = "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
print("paymentsd-bench: \(seconds) s per run, frame \(healthFrame.count) bytes, machine: \(machine)")
print("scenario                    | raw echo rt/s | Health rt/s | ratio | raw p50/p99 us | Health p50/p99 us")
try await InProcessServer.with(table: table, metrics: metrics) { socket, _ in
    for (name, connections, depth) in [("1 connection", 1, 1), ("16 connections", 16, 1), ("1 conn, pipelining 64", 1, 64)] {
        let raw = await measure(.rawEcho, socket: echoPath, connections: connections, depth: depth)
        let health = await measure(.health, socket: socket, connections: connections, depth: depth)
        let label = depth > 1 ? "(per batch of \(depth))" : ""
        let padded = name.padding(toLength: 27, withPad: " ", startingAt: 0)
        print(
            padded
                + String(
                    format: " | %13.0f | %11.0f | %5.2f | %6.0f / %6.0f | %6.0f / %6.0f ", raw.perSecond,
                    health.perSecond, health.perSecond / raw.perSecond, raw.percentile(0.5), raw.percentile(0.99),
                    health.percentile(0.5), health.percentile(0.99)) + label)
    }
}
try await echo.close()
