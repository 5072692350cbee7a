import ArgumentParser
import Foundation
import PaymentsWire

struct ConfirmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "confirm", abstract: "Ask Stripe for the checkout now and apply what it says (ConfirmCheckout).")

    @OptionGroup var options: CallOptions
    @Option(help: "A deal: its latest payment.") var deal = ""
    @Option(help: "A payment id.") var payment = ""

    func run() throws {
        try CallRunner.run(
            .confirmCheckout, request: PaymentRef(dealID: self.deal, paymentID: self.payment), options: self.options,
            as: Payment.self, output: PaymentOutput.init, human: PaymentOutput.line)
    }
}

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Expire the deal's open checkout at Stripe, then release it (CancelCheckout).")

    @OptionGroup var options: CallOptions
    @Option(help: "The deal.") var deal: String
    @Option(help: "Why, for the audit trail.") var reason = ""
    @Option(name: .customLong("idempotency-key")) var idempotencyKey = ""

    func run() throws {
        try CallRunner.run(
            .cancelCheckout, request: CancelRequest(dealID: self.deal, reason: self.reason), options: self.options,
            idempotencyKey: self.idempotencyKey, as: Payment.self, output: PaymentOutput.init, human: PaymentOutput.line)
    }
}

struct WebhookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "Forward one webhook delivery (HandleStripeEvent): the raw body from a file and its Stripe-Signature.")

    @OptionGroup var options: CallOptions
    @Option(help: "The file holding the request body exactly as received (- for standard input).") var file: String
    @Option(help: "The Stripe-Signature header's value.") var signature: String

    struct Output: Encodable {
        let event_id: String
        let type: String
        let outcome: String
    }

    func run() throws {
        let body: Data
        if self.file == "-" {
            body = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let data = FileManager.default.contents(atPath: self.file) else {
                throw ValidationError("cannot read \(self.file)")
            }
            body = data
        }
        try CallRunner.run(
            .handleStripeEvent, request: StripeEvent(payload: Array(body), signature: self.signature),
            options: self.options, as: EventResult.self,
            output: { Output(event_id: $0.eventID, type: $0.type, outcome: $0.outcome.name) },
            human: { "\($0.outcome.name) \($0.eventID) \($0.type)" })
    }
}

struct ReconcileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile", abstract: "Run the janitor's sweep now and print its counts (Reconcile, admin).")

    @OptionGroup var options: CallOptions

    struct Output: Encodable {
        let expired: UInt64
        let resumed: UInt64
        let repaired: UInt64
        let orphans: UInt64
        let stuck: UInt64
    }

    func run() throws {
        try CallRunner.run(
            .reconcile, request: ReconcileRequest(), options: self.options, as: ReconcileReport.self,
            output: { Output(expired: $0.expired, resumed: $0.resumed, repaired: $0.repaired, orphans: $0.orphans, stuck: $0.stuck) },
            human: {
                "expired=\($0.expired) resumed=\($0.resumed) repaired=\($0.repaired) orphans=\($0.orphans) stuck=\($0.stuck)"
            })
    }
}
