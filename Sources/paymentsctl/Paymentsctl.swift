import ArgumentParser

/// paymentsctl: the operator's client of paymentsd, one subcommand per method.
@main
struct Paymentsctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paymentsctl",
        abstract: "Call paymentsd over its Unix socket.",
        discussion: """
            Options common to every call (--socket, --json, --timeout-ms) may stand before or after \
            the subcommand. Exit status is 0 only when the call returned OK; 1 when the daemon answered \
            with an error (its code and reason are printed); 69 when the daemon could not be reached.
            """,
        subcommands: [
            HealthCommand.self, MetricsCommand.self, CheckoutCommand.self, PaymentCommand.self, PaymentsCommand.self,
            EventsCommand.self, StockCommand.self, ConfirmCommand.self, CancelCommand.self, WebhookCommand.self,
            ReconcileCommand.self, RefundCommand.self, ClaimCommand.self,
        ])

    /// Options shared by every subcommand, with whether each takes a value.
    static let sharedOptions: [String: Bool] = ["--socket": true, "--json": false, "--timeout-ms": true]

    static func main() {
        Self.main(Self.movingSharedOptionsAfterSubcommand(Array(CommandLine.arguments.dropFirst())))
    }

    /// `paymentsctl --socket S stock get X` becomes `paymentsctl stock get X --socket S`: the parser takes
    /// options only on the (leaf) subcommand, and after its arguments is always a place for them.
    static func movingSharedOptionsAfterSubcommand(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first, let option = first.split(separator: "=", maxSplits: 1).first,
            let takesValue = Self.sharedOptions[String(option)]
        {
            leading.append(rest.removeFirst())
            if takesValue, !first.contains("="), let value = rest.first {
                leading.append(value)
                rest.removeFirst()
            }
        }
        guard !rest.isEmpty else { return arguments }
        // After a "--" everything is an argument, so the options go before it.
        var result = Array(rest)
        result.insert(contentsOf: leading, at: result.firstIndex(of: "--") ?? result.endIndex)
        return result
    }
}
