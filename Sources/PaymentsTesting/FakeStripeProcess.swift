import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The project's fake Stripe (`python3 -m fakestripe`) as a child process, for the benchmark and
/// for Swift tests that need real HTTP to a stateful Stripe.
///
/// Its calls block (a pipe read, an HTTP exchange): from async code, make them through `blocking`.
/// `@unchecked Sendable` is safe: `process` is touched only in `init` and `deinit`, and the other
/// stored properties are immutable strings.
public final class FakeStripeProcess: @unchecked Sendable {
    let process = Process()
    private let lifeline = Pipe()
    public let url: String
    public static let apiKey = "sk_test_bench"

    /// The repository root, found from this source file's place in it.
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public init(repositoryRoot: String = FakeStripeProcess.repositoryRoot) throws {
        let output = Pipe()
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        self.process.arguments = [
            "python3", "-m", "fakestripe", "--port", "0", "--api-key", Self.apiKey, "--quiet", "--exit-on-stdin-eof",
        ]
        self.process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        self.process.standardOutput = output
        // Never the parent's stderr: a child holding a test runner's pipe open would keep it waiting for EOF.
        self.process.standardError = FileHandle.nullDevice
        // The fake stops when this pipe closes: at `stop()`, or when this process dies.
        self.process.standardInput = self.lifeline
        try self.process.run()
        // It prints "fakestripe listening on http://127.0.0.1:PORT" once it accepts.
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw CocoaError(.fileReadUnknown) }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let range = text.range(of: "http://") else { throw CocoaError(.fileReadCorruptFile) }
        self.url = String(text[range.lowerBound...].prefix { !$0.isWhitespace })
    }

    /// Sends a JSON body to one of the fake's control routes (`/_fake/...`) and returns the answer's body.
    @discardableResult
    public func control(_ method: String, _ path: String, json: String? = nil) throws -> [String: Any] {
        var request = URLRequest(url: URL(string: self.url + path)!)
        request.httpMethod = method
        request.setValue("Bearer \(Self.apiKey)", forHTTPHeaderField: "Authorization")
        if let json {
            request.httpBody = Data(json.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let result = Shared<(Data?, Error?)>((nil, nil))
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: request) { data, _, error in
            result.withLock { $0 = (data, error) }
            done.signal()
        }.resume()
        done.wait()
        if let error = result.value.1 { throw error }
        return (try? JSONSerialization.jsonObject(with: result.value.0 ?? Data()) as? [String: Any]) ?? [:]
    }

    /// Stops the fake by closing its standard input (a signal would reach pyenv's shim, not Python).
    /// Not waited for: Foundation reaps it.
    public func stop() {
        try? self.lifeline.fileHandleForWriting.close()
    }

    deinit { self.stop() }
}
