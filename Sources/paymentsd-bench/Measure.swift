import Dispatch
import Foundation
import PaymentsClient
import PaymentsTesting
import PaymentsWire

/// Round trips counted and timed by a benchmark run.
struct Measurement {
    let roundTrips: Int
    let elapsed: Double
    let latenciesNS: [UInt64]

    var perSecond: Double { Double(self.roundTrips) / self.elapsed }
    var meanMicroseconds: Double {
        self.latenciesNS.isEmpty ? 0 : Double(self.latenciesNS.reduce(0, +)) / Double(self.latenciesNS.count) / 1000
    }

    func percentile(_ p: Double) -> Double {
        let sorted = self.latenciesNS.sorted()
        guard !sorted.isEmpty else { return 0 }
        return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
    }
}

/// Runs `clients` threads, each with its own connection, calling `round(connection, client, iteration)`
/// until `seconds` pass or `iterations` rounds are done; each round's time is one latency sample.
func measure(
    socket: String, clients: Int, seconds: Double, iterations: Int = .max,
    _ round: @escaping @Sendable (PaymentsConnection, Int, Int) throws -> Int
) async -> Measurement {
    let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
    let collected = Shared((total: 0, latencies: [UInt64](), running: clients))
    let start = DispatchTime.now().uptimeNanoseconds
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        for client in 0..<clients {
            // Blocking clients on threads of their own: the server needs the concurrency pool.
            Thread.detachNewThread {
                var count = 0
                var local: [UInt64] = []
                do {
                    let connection = try PaymentsConnection(path: socket)
                    var iteration = 0
                    while DispatchTime.now().uptimeNanoseconds < deadline, iteration < iterations {
                        let sent = DispatchTime.now().uptimeNanoseconds
                        count += try round(connection, client, iteration)
                        local.append(DispatchTime.now().uptimeNanoseconds - sent)
                        iteration += 1
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
    return Measurement(roundTrips: collected.value.total, elapsed: elapsed, latenciesNS: collected.value.latencies)
}

/// One call that must answer OK.
func call(_ connection: PaymentsConnection, _ method: MethodName, _ request: some WireMessage) throws -> [UInt8] {
    let response = try connection.call(method, payload: request.serialized())
    precondition(response.status.code == .ok, "\(method.rawValue) failed: \(response.status)")
    return response.payload
}

/// Sets a SKU's stock through the daemon at `socket`, on a connection of its own, before a measurement.
func setStock(socket: String, sku: String, onHand: Int64, idempotencyKey: String) async throws {
    try await blocking {
        let connection = try PaymentsConnection(path: socket)
        let response = try connection.call(
            .setStock, payload: StockUpdate(sku: sku, onHand: onHand).serialized(), idempotencyKey: idempotencyKey)
        precondition(response.status.code == .ok, "SetStock failed: \(response.status)")
    }
}

/// Runs an async call from a measurement's client thread (which may block) and waits for it;
/// a failure ends the run, since a figure from failing calls would mean nothing.
func waitFor(_ what: String, _ body: @escaping @Sendable () async throws -> Void) {
    let done = DispatchSemaphore(value: 0)
    let failure = Shared<String?>(nil)
    Task {
        do { try await body() } catch { failure.withLock { $0 = "\(error)" } }
        done.signal()
    }
    done.wait()
    if let failure = failure.value { fatalError("\(what) failed: \(failure)") }
}
