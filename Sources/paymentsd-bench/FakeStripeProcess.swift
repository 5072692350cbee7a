import Foundation

/// The project's fake Stripe (`python3 -m fakestripe`) as a child process for the benchmark.
final class FakeStripeProcess {
    let process = Process()
    let url: String

    init(repositoryRoot: String) throws {
        let output = Pipe()
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        self.process.arguments = [
            "python3", "-m", "fakestripe", "--port", "0", "--api-key", "sk_test_bench", "--quiet",
        ]
        self.process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        self.process.standardOutput = output
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

    deinit { self.process.terminate() }
}
