import Foundation

/// The C echo server (`bench/echo-server.c`) as a child process: the baseline every RPC figure is
/// divided by. It runs in its own process, as the daemon would, so it competes for the same two
/// cores with the bench's clients the way a real peer does.
///
/// `@unchecked Sendable` is safe: `process` is touched only in `init` and `stop`, both called from
/// the bench's top level, one after the other.
final class EchoServerProcess: @unchecked Sendable {
    private let process = Process()

    struct NotReady: Error, CustomStringConvertible {
        let executable: String
        var description: String { "the echo server \(self.executable) did not start (built by `make bench`)" }
    }

    init(executable: String, socket: String) throws {
        let output = Pipe()
        self.process.executableURL = URL(fileURLWithPath: executable)
        self.process.arguments = [socket]
        self.process.standardOutput = output
        self.process.standardError = FileHandle.standardError
        do { try self.process.run() } catch { throw NotReady(executable: executable) }
        // It prints "ready" once it listens.
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw NotReady(executable: executable) }
            line.append(chunk)
        }
    }

    func stop() {
        self.process.terminate()
        self.process.waitUntilExit()
    }
}
