/// The commands that act on a deal's payment, each with the states it may start from, declared
/// once here. A refusal's reason follows from the declaration and the state alone, so one
/// situation always gets one reason, whichever command meets it.
public enum PaymentCommand: Sendable, CaseIterable {
    /// `CreateCheckout`: an open checkout is handled by `on_open`; a closed one makes room for a new one.
    case createCheckout
    /// `CancelCheckout`: only an open checkout.
    case cancelCheckout
    /// `RefundPayment`: only money taken and not all given back.
    case refundPayment

    /// The states of the deciding payment (`deciding(_:)`) the command may start from.
    public var allowedStates: Set<PaymentStatus> {
        switch self {
        case .createCheckout: [.created, .expired, .canceled, .failed]
        case .cancelCheckout: [.created]
        case .refundPayment: [.paid, .partiallyRefunded]
        }
    }

    /// Nil when the command may start on `payment`; otherwise why not.
    public func refusal(_ payment: PaymentRecord) -> PaymentsError? {
        guard !self.allowedStates.contains(payment.status) else { return nil }
        switch payment.status {
        case .paid, .partiallyRefunded:
            return .alreadyPaid(paymentID: payment.paymentID)
        case .refunded:
            return .alreadyRefunded(paymentID: payment.paymentID)
        case .created, .expired, .canceled, .failed:
            switch self {
            case .refundPayment: return .paymentNotPaid(paymentID: payment.paymentID, status: payment.status.name)
            case .createCheckout, .cancelCheckout: return .checkoutNotOpen(paymentID: payment.paymentID)
            }
        }
    }

    /// The payment of a deal that decides what a command may do: the one that took money (a deal
    /// is paid at most once), else its open checkout, else its latest. `payments` oldest first.
    public static func deciding(_ payments: [PaymentRecord]) -> PaymentRecord? {
        payments.last(where: { $0.status.isSettledPaid }) ?? payments.first(where: { $0.status == .created })
            ?? payments.last
    }
}
