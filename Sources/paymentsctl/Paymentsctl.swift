import ArgumentParser

/// paymentsctl: the operator's client of paymentsd, one subcommand per method.
@main
struct Paymentsctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paymentsctl",
        abstract: "Call paymentsd over its Unix socket.",
        discussion: """
            Exit status is 0 only when the call returned OK; 1 when the daemon answered \
            with an error (its code and reason are printed); 69 when the daemon could not be reached.
            """,
        subcommands: [HealthCommand.self, MetricsCommand.self])
}
