import PaymentsWire
import Synchronization

/// Request counts and latencies by method and code, and connection counts,
/// rendered in Prometheus' text exposition format (version 0.0.4).
public final class RequestMetrics: Sendable {
    /// Upper bounds of the latency buckets, in seconds.
    static let bucketBounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    private struct Histogram {
        var buckets = [UInt64](repeating: 0, count: RequestMetrics.bucketBounds.count)
        var sum: Double = 0
        var count: UInt64 = 0
    }

    private struct State {
        // Keyed by the method (nil: a name outside the service), not its name: hashing an enum
        // on every call is cheaper than hashing a string.
        var requests: [MethodName?: [StatusCode: UInt64]] = [:]
        var latencies: [MethodName?: Histogram] = [:]
        var frameErrors: [String: UInt64] = [:]
        var connectionsOpen = 0
        var connectionsTotal: UInt64 = 0
        var connectionsRefused: UInt64 = 0
        var connectionsTimedOut: [String: UInt64] = ["frame": 0, "idle": 0]
        var acceptErrors: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Counts one answered call. `method` is nil for names outside the service, all counted as
    /// "unknown" (so junk from a caller cannot grow the series).
    public func record(method: MethodName?, code: StatusCode, duration: Duration) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        self.state.withLock { state in
            state.requests[method, default: [:]][code, default: 0] += 1
            var histogram = state.latencies[method] ?? Histogram()
            if let bucket = Self.bucketBounds.firstIndex(where: { seconds <= $0 }) { histogram.buckets[bucket] += 1 }
            histogram.sum += seconds
            histogram.count += 1
            state.latencies[method] = histogram
        }
    }

    func frameError(reason: String) { self.state.withLock { $0.frameErrors[reason, default: 0] += 1 } }
    func connectionOpened() { self.state.withLock { $0.connectionsOpen += 1; $0.connectionsTotal += 1 } }
    func connectionClosed() { self.state.withLock { $0.connectionsOpen -= 1 } }
    func connectionRefused() { self.state.withLock { $0.connectionsRefused += 1 } }
    func connectionTimedOut(reason: String) { self.state.withLock { $0.connectionsTimedOut[reason, default: 0] += 1 } }
    func acceptError() { self.state.withLock { $0.acceptErrors += 1 } }

    /// The count of calls of `method` answered with `code` so far.
    public func count(method: MethodName?, code: StatusCode) -> UInt64 {
        self.state.withLock { $0.requests[method]?[code] ?? 0 }
    }

    private static func name(_ method: MethodName?) -> String { method?.rawValue ?? "unknown" }

    /// Prometheus text exposition of everything recorded.
    public func exposition() -> String {
        let state = self.state.withLock { $0 }
        var out = ""
        out += "# HELP paymentsd_requests_total Calls answered, by method and status code.\n"
        out += "# TYPE paymentsd_requests_total counter\n"
        for (method, counts) in state.requests.sorted(by: { Self.name($0.key) < Self.name($1.key) }) {
            for (code, count) in counts.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                out += "paymentsd_requests_total{method=\"\(Self.name(method))\",code=\"\(code)\"} \(count)\n"
            }
        }
        out += "# HELP paymentsd_request_duration_seconds Time from a request's decoding to its answer.\n"
        out += "# TYPE paymentsd_request_duration_seconds histogram\n"
        for (key, histogram) in state.latencies.sorted(by: { Self.name($0.key) < Self.name($1.key) }) {
            let method = Self.name(key)
            var cumulative: UInt64 = 0
            for (index, bound) in Self.bucketBounds.enumerated() {
                cumulative += histogram.buckets[index]
                out += "paymentsd_request_duration_seconds_bucket{method=\"\(method)\",le=\"\(bound)\"} \(cumulative)\n"
            }
            out += "paymentsd_request_duration_seconds_bucket{method=\"\(method)\",le=\"+Inf\"} \(histogram.count)\n"
            out += "paymentsd_request_duration_seconds_sum{method=\"\(method)\"} \(histogram.sum)\n"
            out += "paymentsd_request_duration_seconds_count{method=\"\(method)\"} \(histogram.count)\n"
        }
        Self.family(
            "paymentsd_frame_errors_total", "Connections closed for a bad frame, by reason.", type: "counter",
            label: "reason", state.frameErrors, into: &out)
        Self.family("paymentsd_connections_open", "Client connections open now.", type: "gauge", state.connectionsOpen, into: &out)
        Self.family(
            "paymentsd_connections_total", "Client connections accepted.", type: "counter", state.connectionsTotal, into: &out)
        Self.family(
            "paymentsd_connections_refused_total",
            "Connections answered too_many_connections and closed (the cap, or no descriptors left).", type: "counter",
            state.connectionsRefused, into: &out)
        Self.family(
            "paymentsd_connections_timed_out_total", "Connections closed for a half-sent frame or for idling, by reason.",
            type: "counter", label: "reason", state.connectionsTimedOut, into: &out)
        Self.family(
            "paymentsd_accept_errors_total", "Accepts that failed (descriptor limits).", type: "counter",
            state.acceptErrors, into: &out)
        return out
    }

    /// One metric family without labels.
    private static func family(
        _ name: String, _ help: String, type: String, _ value: some BinaryInteger, into out: inout String
    ) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
    }

    /// One metric family with a sample per value of one label, in the label's order.
    private static func family(
        _ name: String, _ help: String, type: String, label: String, _ values: [String: UInt64], into out: inout String
    ) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (value, count) in values.sorted(by: { $0.key < $1.key }) {
            out += "\(name){\(label)=\"\(value)\"} \(count)\n"
        }
    }
}
