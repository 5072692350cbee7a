import PaymentsDomain
import Testing

/// Each command's allowed starting states are declared once, and a refusal follows from the state:
/// the same situation gets the same reason from every command.
@Suite struct PaymentCommandTests {
    static func payment(_ status: PaymentStatus, id: String = "pay_1") -> PaymentRecord {
        PaymentRecord(
            paymentID: id, dealID: "d", customerRef: "", mode: .payment, status: status, currency: "usd",
            amountTotal: 1000, amountRefunded: 0, successURL: "https://s", cancelURL: "https://c", fingerprint: "",
            expiresAt: 0, sessionAttempt: 0, checkoutSessionID: nil, checkoutURL: nil, paymentIntentID: nil,
            subscriptionID: nil, failureReason: nil, orderID: nil, createdAt: 0, updatedAt: 0, items: [], metadata: [],
            claims: [], refunds: [])
    }

    @Test(arguments: PaymentCommand.allCases)
    func aCommandIsRefusedExactlyOutsideItsDeclaredStates(command: PaymentCommand) {
        for status in PaymentStatus.allCases {
            let refusal = command.refusal(Self.payment(status))
            #expect((refusal == nil) == command.allowedStates.contains(status), "\(command) on \(status)")
        }
    }

    @Test func aRefundedDeal_isAlreadyRefunded_forEveryCommandThatRefusesIt() {
        for command in PaymentCommand.allCases where !command.allowedStates.contains(.refunded) {
            #expect(command.refusal(Self.payment(.refunded)) == .alreadyRefunded(paymentID: "pay_1"), "\(command)")
        }
    }

    @Test func aPaidDeal_isAlreadyPaid_forCheckoutAndCancel() {
        for status in [PaymentStatus.paid, .partiallyRefunded] {
            #expect(PaymentCommand.createCheckout.refusal(Self.payment(status)) == .alreadyPaid(paymentID: "pay_1"))
            #expect(PaymentCommand.cancelCheckout.refusal(Self.payment(status)) == .alreadyPaid(paymentID: "pay_1"))
        }
    }

    @Test func theRefusalsForAnUnpaidOrClosedPayment_nameWhatIsMissing() {
        #expect(
            PaymentCommand.refundPayment.refusal(Self.payment(.created))
                == .paymentNotPaid(paymentID: "pay_1", status: "CREATED"))
        #expect(PaymentCommand.cancelCheckout.refusal(Self.payment(.expired)) == .checkoutNotOpen(paymentID: "pay_1"))
    }

    @Test func theDecidingPayment_isThePaidOne_elseTheOpenOne_elseTheLatest() {
        let expired = Self.payment(.expired, id: "pay_a")
        let open = Self.payment(.created, id: "pay_b")
        let paid = Self.payment(.refunded, id: "pay_c")
        #expect(PaymentCommand.deciding([expired, open])?.paymentID == "pay_b")
        #expect(PaymentCommand.deciding([paid, expired])?.paymentID == "pay_c")
        #expect(PaymentCommand.deciding([expired, Self.payment(.failed, id: "pay_d")])?.paymentID == "pay_d")
        #expect(PaymentCommand.deciding([]) == nil)
    }

    @Test func statesOnlyMoveForward() {
        #expect(PaymentStatus.created.canMove(to: .paid))
        #expect(PaymentStatus.expired.canMove(to: .paid), "a late payment")
        #expect(!PaymentStatus.paid.canMove(to: .created))
        #expect(!PaymentStatus.refunded.canMove(to: .partiallyRefunded))
        for status in PaymentStatus.allCases { #expect(!status.canMove(to: .created)) }
    }
}
