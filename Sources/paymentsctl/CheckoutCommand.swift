import ArgumentParser
import PaymentsWire

struct CheckoutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkout", abstract: "Open a Stripe Checkout Session for a deal (CreateCheckout).")

    @OptionGroup var options: CallOptions

    @Option(help: "The deal to check out.") var deal: String
    @Option(help: "Lowercase ISO-4217 currency.") var currency = "usd"
    @Option(
        name: .customLong("item"),
        help: "An item as SKU:NAME:QUANTITY:UNIT_AMOUNT, or SKU:NAME:QUANTITY:PRICE_ID with --subscription (repeatable).")
    var items: [String]
    @Flag(help: "A subscription checkout: items name Stripe prices; --customer-ref is required.") var subscription = false
    @Option(name: .customLong("claim"), help: "A unique name to hold for the deal, e.g. slug:alice (repeatable).")
    var claims: [String] = []
    @Option(name: .customLong("success-url")) var successURL: String
    @Option(name: .customLong("cancel-url")) var cancelURL: String
    @Option(name: .customLong("customer-ref")) var customerRef = ""
    @Option(name: .customLong("on-open"), help: "return-existing, replace or reject.") var onOpen = "return-existing"
    @Option(name: .customLong("metadata"), help: "KEY=VALUE (repeatable).") var metadata: [String] = []
    @Option(name: .customLong("idempotency-key")) var idempotencyKey = ""

    func run() throws {
        let lineItems = try self.items.map { text -> LineItem in
            let parts = text.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            if self.subscription {
                guard parts.count == 4, let quantity = Int64(parts[2]) else {
                    throw ValidationError("--item wants SKU:NAME:QUANTITY:PRICE_ID with --subscription, got \(text)")
                }
                return LineItem(sku: parts[0], name: parts[1], quantity: quantity, priceID: parts[3])
            }
            guard parts.count == 4, let quantity = Int64(parts[2]), let amount = Int64(parts[3]) else {
                throw ValidationError("--item wants SKU:NAME:QUANTITY:UNIT_AMOUNT, got \(text)")
            }
            return LineItem(sku: parts[0], name: parts[1], quantity: quantity, unitAmount: amount)
        }
        let policy: OnOpen
        switch self.onOpen {
        case "return-existing": policy = .returnExisting
        case "replace": policy = .replace
        case "reject": policy = .reject
        default: throw ValidationError("--on-open is return-existing, replace or reject")
        }
        let headers = try self.metadata.map { entry -> Header in
            guard let equals = entry.firstIndex(of: "=") else { throw ValidationError("--metadata wants KEY=VALUE") }
            return Header(String(entry[..<equals]), String(entry[entry.index(after: equals)...]))
        }
        let request = CreateCheckoutRequest(
            dealID: self.deal, customerRef: self.customerRef, mode: self.subscription ? .subscription : .payment,
            currency: self.currency, items: lineItems, claims: self.claims, successURL: self.successURL, cancelURL: self.cancelURL, onOpen: policy, metadata: headers)
        try CallRunner.run(
            .createCheckout, request: request, options: self.options, idempotencyKey: self.idempotencyKey,
            as: Payment.self, output: PaymentOutput.init, human: PaymentOutput.line)
    }
}

struct PaymentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "payment", abstract: "Show the deal's latest payment, or the one named (GetPayment).")

    @OptionGroup var options: CallOptions
    @Option(help: "A deal: its latest payment.") var deal = ""
    @Option(help: "A payment id.") var payment = ""

    func run() throws {
        try CallRunner.run(
            .getPayment, request: PaymentRef(dealID: self.deal, paymentID: self.payment), options: self.options,
            as: Payment.self, output: PaymentOutput.init, human: PaymentOutput.line)
    }
}

struct PaymentsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "payments", abstract: "List a deal's payments, oldest first (ListPayments).")

    @OptionGroup var options: CallOptions
    @Option(help: "The deal.") var deal: String

    func run() throws {
        try CallRunner.run(
            .listPayments, request: PaymentRef(dealID: self.deal), options: self.options, as: PaymentList.self,
            output: { $0.payments.map(PaymentOutput.init) },
            human: { $0.payments.map(PaymentOutput.line).joined(separator: "\n") })
    }
}

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show a deal's audit trail (ListEvents).")

    @OptionGroup var options: CallOptions
    @Option(help: "The deal.") var deal: String

    struct Output: Encodable {
        let seq: UInt64
        let at: Int64
        let payment_id: String
        let kind: String
        let from_status: String
        let to_status: String
        let detail: String
    }

    func run() throws {
        try CallRunner.run(
            .listEvents, request: PaymentRef(dealID: self.deal), options: self.options, as: EventList.self,
            output: {
                $0.events.map {
                    Output(
                        seq: $0.seq, at: $0.at, payment_id: $0.paymentID, kind: $0.kind, from_status: $0.fromStatus,
                        to_status: $0.toStatus, detail: $0.detail)
                }
            },
            human: {
                $0.events.map { event in
                    let move = event.toStatus.isEmpty ? "" : " \(event.fromStatus.isEmpty ? "-" : event.fromStatus)->\(event.toStatus)"
                    return "\(event.seq) \(event.at) \(event.paymentID) \(event.kind)\(move) \(event.detail)"
                }.joined(separator: "\n")
            })
    }
}
