import ArgumentParser
import PaymentsWire

struct RefundCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refund",
        abstract: "Refund all or part of a paid payment (RefundPayment; root or an admin group).",
        discussion: """
            The idempotency key is required: run the same command with the same key again to retry \
            safely (the daemon resumes that refund, it never makes a second one).
            """)

    enum Reason: String, ExpressibleByArgument, CaseIterable {
        case requestedByCustomer = "requested_by_customer"
        case duplicate
        case fraudulent

        var wire: RefundReason {
            switch self {
            case .requestedByCustomer: .requestedByCustomer
            case .duplicate: .duplicate
            case .fraudulent: .fraudulent
            }
        }
    }

    @OptionGroup var options: CallOptions
    @Option(help: "A deal: its paid payment.") var deal = ""
    @Option(help: "A payment id.") var payment = ""
    @Option(help: "Minor units to refund; 0 (the default) refunds all that remains.") var amount: Int64 = 0
    @Option(help: "Why, as Stripe records it.") var reason: Reason = .requestedByCustomer
    @Flag(help: "Return the order's items to stock when the payment is fully refunded.") var restock = false
    @Option(name: .customLong("idempotency-key"), help: "The refund's key; the same key retries the same refund.")
    var idempotencyKey: String

    func run() throws {
        let request = RefundRequest(
            dealID: self.deal, paymentID: self.payment, amount: self.amount, reason: self.reason.wire,
            restock: self.restock)
        try CallRunner.run(
            .refundPayment, request: request, options: self.options, idempotencyKey: self.idempotencyKey,
            as: Refund.self, output: RefundOutput.init, human: RefundOutput.lines)
    }
}

/// A refund as printed by paymentsctl; `payment` is the payment after it.
struct RefundOutput: Encodable {
    let refund_id: String
    let payment_id: String
    let amount: Int64
    let status: String
    let stripe_refund_id: String
    let reason: String
    let failure_reason: String
    let created_at: Int64
    let payment: PaymentOutput?

    init(_ refund: Refund) {
        self.refund_id = refund.refundID
        self.payment_id = refund.paymentID
        self.amount = refund.amount
        self.status = refund.status.name
        self.stripe_refund_id = refund.stripeRefundID
        self.reason = refund.reason.name
        self.failure_reason = refund.failureReason
        self.created_at = refund.createdAt
        self.payment = refund.payment.map(PaymentOutput.init)
    }

    static func line(_ refund: Refund) -> String {
        var text = "\(refund.refundID) \(refund.status.name) amount=\(refund.amount) payment=\(refund.paymentID)"
        if !refund.stripeRefundID.isEmpty { text += " stripe=\(refund.stripeRefundID)" }
        if !refund.failureReason.isEmpty { text += " failure=\(refund.failureReason)" }
        return text
    }

    static func lines(_ refund: Refund) -> String {
        ([Self.line(refund)] + (refund.payment.map { [PaymentOutput.line($0)] } ?? [])).joined(separator: "\n")
    }
}
