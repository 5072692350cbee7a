import ArgumentParser
import Foundation
import PaymentsClient
import PaymentsWire

/// Makes one call and prints its answer: human lines by default, JSON with `--json`.
///
/// Every subcommand goes through here, so exit statuses and error output are
/// the same for all of them.
enum CallRunner {
    static let unreachable: Int32 = 69

    static func run<Response: WireMessage, Output: Encodable>(
        _ method: MethodName, request: some WireMessage, options: CallOptions, idempotencyKey: String = "",
        as _: Response.Type, output: (Response) -> Output, human: (Response) -> String
    ) throws {
        let response: ResponseEnvelope
        do {
            let connection = try PaymentsConnection(path: options.socketPath)
            response = try connection.call(
                method, payload: request.serialized(), timeoutMS: options.timeoutMS, idempotencyKey: idempotencyKey)
        } catch {
            Self.printError("paymentsctl: \(error)")
            throw ExitCode(Self.unreachable)
        }
        guard response.status.code == .ok else {
            if options.json {
                Self.printJSON(StatusOutput(response.status))
            } else {
                var line = "error: \(response.status.code) \(response.status.reason): \(response.status.message)"
                for detail in response.status.details { line += " [\(detail.key)=\(detail.value)]" }
                Self.printError(line)
            }
            throw ExitCode.failure
        }
        guard let decoded = try? Response(serialized: response.payload) else {
            Self.printError("paymentsctl: the daemon's answer is not a \(Response.self)")
            throw ExitCode.failure
        }
        if options.json { Self.printJSON(output(decoded)) } else { print(human(decoded)) }
    }

    static func printJSON(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        print(String(decoding: data, as: UTF8.self))
    }

    static func printError(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

/// A non-OK status as JSON.
struct StatusOutput: Encodable {
    let code: String
    let reason: String
    let message: String
    let details: [String: String]

    init(_ status: Status) {
        self.code = status.code.description
        self.reason = status.reason
        self.message = status.message
        self.details = Dictionary(status.details.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
    }
}
