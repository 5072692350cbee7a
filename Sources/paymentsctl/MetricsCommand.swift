import ArgumentParser
import PaymentsWire

struct MetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics", abstract: "Print the daemon's metrics (Prometheus text format).")

    @OptionGroup var options: CallOptions

    struct Output: Encodable {
        let text: String
    }

    func run() throws {
        try CallRunner.run(
            .metrics, request: MetricsRequest(), options: self.options, as: MetricsReply.self,
            output: { Output(text: $0.text) }, human: { $0.text })
    }
}
