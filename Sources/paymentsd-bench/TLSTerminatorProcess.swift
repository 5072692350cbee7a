import Foundation

/// `bench/tls-terminator.py` as a child process: HTTPS on 127.0.0.1 in front of the fake Stripe,
/// with a CA of its own that the bench's Stripe client is told to trust (`caFile`).
///
/// `@unchecked Sendable` is safe: `process` is touched only in `init` and `stop`, both called from
/// one task, one after the other; the other stored properties are immutable.
final class TLSTerminatorProcess: @unchecked Sendable {
    private let process = Process()
    private let lifeline = Pipe()
    /// `https://localhost:PORT`.
    let url: String
    let caFile: String

    struct NotReady: Error, CustomStringConvertible {
        let output: String
        var description: String { "the TLS terminator did not start: \(self.output)" }
    }

    init(repositoryRoot: String, targetURL: String, directory: String) throws {
        let output = Pipe()
        let port = String(targetURL.split(separator: ":").last ?? "")
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        self.process.arguments = [
            "python3", "\(repositoryRoot)/bench/tls-terminator.py", "--target-port", port, "--dir", directory,
        ]
        self.process.standardOutput = output
        self.process.standardError = FileHandle.standardError
        // It stops when this pipe closes: at `stop()`, or when the bench dies.
        self.process.standardInput = self.lifeline
        try self.process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw NotReady(output: String(decoding: line, as: UTF8.self)) }
            line.append(chunk)
        }
        // "tls-terminator listening on https://localhost:PORT ca=/dir/ca.pem"
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard let url = words.first(where: { $0.hasPrefix("https://") }),
            let ca = words.first(where: { $0.hasPrefix("ca=") })
        else { throw NotReady(output: String(decoding: line, as: UTF8.self)) }
        self.url = String(url)
        self.caFile = String(ca.dropFirst(3))
    }

    func stop() {
        try? self.lifeline.fileHandleForWriting.close()
        self.process.waitUntilExit()
    }
}
