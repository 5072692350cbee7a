import ArgumentParser
import PaymentsWire

struct HealthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "health", abstract: "Is the daemon serving?")

    @OptionGroup var options: CallOptions

    struct Output: Encodable {
        let status: String
        let version: String
        let uptime_s: UInt64
        let pending_operations: UInt64
    }

    func run() throws {
        try CallRunner.run(
            .health, request: HealthRequest(), options: self.options, as: HealthReply.self,
            output: { reply in
                Output(
                    status: Self.name(reply.status), version: reply.version, uptime_s: reply.uptimeSeconds,
                    pending_operations: reply.pendingOperations)
            },
            human: { reply in
                "\(Self.name(reply.status)) version=\(reply.version) uptime=\(reply.uptimeSeconds)s "
                    + "pending_operations=\(reply.pendingOperations)"
            })
    }

    static func name(_ status: ServingStatus) -> String {
        switch status {
        case .serving: "SERVING"
        case .notServing: "NOT_SERVING"
        case .unspecified: "UNSPECIFIED"
        }
    }
}
