import CCurl
import Dispatch
import Synchronization

/// One HTTP exchange's result.
struct HTTPResponse: Sendable {
    let status: Int
    /// Header names lowercased.
    let headers: [String: String]
    let body: [UInt8]
}

/// A request that got no HTTP answer (refused, reset, timed out).
struct NetworkError: Error, Sendable, CustomStringConvertible {
    let code: Int32
    let message: String
    var description: String { "network error \(self.code): \(self.message)" }
}

/// HTTP over libcurl's easy interface, with handles reused from a `CurlHandlePool` so connections
/// to Stripe stay open between calls.
///
/// `curl_easy_perform` blocks, so requests run on a concurrent dispatch
/// queue, never on the event loops or the Swift concurrency pool; the pool
/// bounds how many block at once.
final class CurlTransport: Sendable {
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()
    private let queue = DispatchQueue(label: "paymentsd.stripe.http", attributes: .concurrent)
    private let pool: CurlHandlePool
    private let opened = Atomic<Int>(0)
    /// The CA bundle that server certificates must chain to; nil: the system's.
    private let caFile: String?

    init(maxCallsInFlight: Int, caFile: String? = nil) {
        _ = Self.globalInit
        self.pool = CurlHandlePool(limit: maxCallsInFlight)
        self.caFile = caFile
    }

    /// Connections opened to Stripe since start-up (a reused one is not counted again).
    var connectionsOpened: Int { self.opened.load(ordering: .relaxed) }

    func perform(
        method: String, url: String, headers: [String], body: [UInt8]?, connectTimeoutMS: Int, timeoutMS: Int
    ) async throws -> HTTPResponse {
        let waitStart = ContinuousClock.now
        let handle = try await self.pool.checkOut()
        defer { self.pool.checkIn(handle) }
        // The wait for a handle is part of the call's time.
        let left = timeoutMS - Int((ContinuousClock.now - waitStart) / .milliseconds(1))
        guard left > 0 else { throw NetworkError(code: 28, message: "no connection to Stripe became free in time") }
        let (response, connects) = try await withCheckedThrowingContinuation { continuation in
            self.queue.async {
                continuation.resume(
                    with: Result {
                        try Self.performBlocking(
                            handle.pointer, method: method, url: url, headers: headers, body: body, caFile: self.caFile,
                            connectTimeoutMS: connectTimeoutMS, timeoutMS: left)
                    })
            }
        }
        self.opened.add(connects, ordering: .relaxed)
        return response
    }

    /// Collects what curl's callbacks deliver; passed to C as an unretained pointer.
    private final class Sink {
        var body: [UInt8] = []
        var headers: [String: String] = [:]
    }

    /// One exchange on `handle`; returns the answer and how many new connections it opened.
    private static func performBlocking(
        _ handle: UnsafeMutableRawPointer, method: String, url: String, headers: [String], body: [UInt8]?,
        caFile: String?, connectTimeoutMS: Int, timeoutMS: Int
    ) throws -> (HTTPResponse, Int) {
        var list: UnsafeMutablePointer<curl_slist>? = nil
        // A body over 1 KiB would otherwise wait for "100 Continue".
        for header in headers + ["Expect:"] { list = curl_slist_append(list, header) }
        defer { curl_slist_free_all(list) }
        let sink = Sink()

        paymentsd_curl_setopt_string(handle, CURLOPT_URL, url)
        paymentsd_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        // libcurl copies the string; the reset at the next check-out clears it.
        if let caFile { paymentsd_curl_setopt_string(handle, CURLOPT_CAINFO, caFile) }
        paymentsd_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, connectTimeoutMS)
        paymentsd_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, max(1, timeoutMS))
        paymentsd_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, list)
        if method == "POST" {
            let bytes = body ?? []
            paymentsd_curl_setopt_long(handle, CURLOPT_POST, 1)
            paymentsd_curl_setopt_long(handle, CURLOPT_POSTFIELDSIZE, bytes.count)
            // COPYPOSTFIELDS copies POSTFIELDSIZE bytes: the Swift buffer need not outlive this call.
            // An empty body still needs a valid pointer, hence the spare byte.
            var storage = bytes.isEmpty ? [UInt8(0)] : bytes
            storage.withUnsafeMutableBytes { raw in
                _ = paymentsd_curl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, raw.baseAddress)
            }
        } else {
            paymentsd_curl_setopt_long(handle, CURLOPT_HTTPGET, 1)
        }
        let context = Unmanaged.passUnretained(sink).toOpaque()
        paymentsd_curl_setopt_write_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            if let data, length > 0 {
                sink.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: length))
            }
            return length
        }
        paymentsd_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
        paymentsd_curl_setopt_write_callback(handle, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            if let data, length > 0 {
                let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
                if let colon = line.firstIndex(of: ":") {
                    let name = line[..<colon].lowercased()
                    let value = line[line.index(after: colon)...].trimmingCharacters(in: " \r\n\t")
                    sink.headers[name] = value
                } else if line.hasPrefix("HTTP/") {
                    sink.headers = [:]  // a new response (after a redirect or 100): forget the old headers
                }
            }
            return length
        }
        paymentsd_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context)

        let code = withExtendedLifetime(sink) { curl_easy_perform(handle) }
        // The callbacks point at `sink`, which goes away with this call; the handle is reused.
        paymentsd_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, nil)
        paymentsd_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, nil)
        paymentsd_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, nil)
        guard code == CURLE_OK else {
            throw NetworkError(code: Int32(code.rawValue), message: String(cString: curl_easy_strerror(code)))
        }
        var status = 0
        paymentsd_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var connects = 0
        paymentsd_curl_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &connects)
        return (HTTPResponse(status: status, headers: sink.headers, body: sink.body), connects)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        let start = self.firstIndex(where: { !characters.contains($0) }) ?? self.endIndex
        let end = self.lastIndex(where: { !characters.contains($0) }).map { self.index(after: $0) } ?? start
        return String(self[start..<Swift.max(start, end)])
    }
}
