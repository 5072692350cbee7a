import PaymentsDomain
import PaymentsEngine
import PaymentsStore
import PaymentsWire

// The service boundary: domain values become wire messages here, and wire enums (with their
// `UNSPECIFIED = 0`, meaning "not given") become domain values, nowhere else.

extension Payment {
    init(_ record: PaymentRecord) {
        self.init(
            paymentID: record.paymentID, dealID: record.dealID, customerRef: record.customerRef,
            mode: Mode(record.mode), status: PaymentsWire.PaymentStatus(record.status), currency: record.currency,
            amountTotal: record.amountTotal, amountRefunded: record.amountRefunded,
            checkoutSessionID: record.checkoutSessionID ?? "", checkoutURL: record.checkoutURL ?? "",
            expiresAt: record.expiresAt, paymentIntentID: record.paymentIntentID ?? "", orderID: record.orderID ?? "",
            created: false, failureReason: record.failureReason ?? "", createdAt: record.createdAt,
            updatedAt: record.updatedAt,
            items: record.items.map {
                LineItem(sku: $0.sku, name: $0.name, quantity: $0.quantity, unitAmount: $0.unitAmount, priceID: $0.priceID)
            },
            claims: record.claims, subscriptionID: record.subscriptionID ?? "", refunds: record.refunds.map(Refund.init))
    }
}

extension Refund {
    /// A refund as the wire shows it; `payment` is left for the caller to set.
    init(_ record: RefundRecord) {
        self.init(
            refundID: record.refundID, paymentID: record.paymentID, amount: record.amount,
            status: PaymentsWire.RefundStatus(record.status), stripeRefundID: record.stripeRefundID ?? "",
            reason: PaymentsWire.RefundReason(record.reason), failureReason: record.failureReason ?? "",
            createdAt: record.createdAt)
    }
}

extension Claim {
    init(_ status: ClaimLedger.Status) {
        self.init(
            key: status.key, state: PaymentsWire.ClaimState(status.state), dealID: status.dealID,
            expiresAt: status.expiresAt)
    }
}

extension Stock {
    init(_ level: StockLedger.Level) {
        self.init(sku: level.sku, onHand: level.onHand, reserved: level.reserved, available: level.available)
    }
}

extension Mode {
    init(_ mode: PaymentMode) {
        switch mode {
        case .payment: self = .payment
        case .subscription: self = .subscription
        }
    }

    /// Nil for UNSPECIFIED.
    var domain: PaymentMode? {
        switch self {
        case .unspecified: nil
        case .payment: .payment
        case .subscription: .subscription
        }
    }
}

extension PaymentsWire.OnOpen {
    /// UNSPECIFIED is RETURN_EXISTING, the default protocol.md gives.
    var domain: PaymentsDomain.OnOpen {
        switch self {
        case .unspecified, .returnExisting: .returnExisting
        case .replace: .replace
        case .reject: .reject
        }
    }
}

extension PaymentsWire.PaymentStatus {
    init(_ status: PaymentsDomain.PaymentStatus) {
        switch status {
        case .created: self = .created
        case .paid: self = .paid
        case .partiallyRefunded: self = .partiallyRefunded
        case .refunded: self = .refunded
        case .expired: self = .expired
        case .canceled: self = .canceled
        case .failed: self = .failed
        }
    }
}

extension PaymentsWire.RefundStatus {
    init(_ status: PaymentsDomain.RefundStatus) {
        switch status {
        case .pending: self = .pending
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        }
    }
}

extension PaymentsWire.RefundReason {
    /// UNSPECIFIED for none.
    init(_ reason: PaymentsDomain.RefundReason?) {
        switch reason {
        case nil: self = .unspecified
        case .requestedByCustomer: self = .requestedByCustomer
        case .duplicate: self = .duplicate
        case .fraudulent: self = .fraudulent
        }
    }

    /// Nil for UNSPECIFIED (no reason given).
    var domain: PaymentsDomain.RefundReason? {
        switch self {
        case .unspecified: nil
        case .requestedByCustomer: .requestedByCustomer
        case .duplicate: .duplicate
        case .fraudulent: .fraudulent
        }
    }
}

extension PaymentsWire.ClaimState {
    init(_ state: PaymentsDomain.ClaimState) {
        switch state {
        case .free: self = .free
        case .held: self = .held
        case .taken: self = .taken
        }
    }
}
