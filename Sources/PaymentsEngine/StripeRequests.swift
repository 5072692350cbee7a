import PaymentsDomain
import StripeClient

/// The Stripe requests of a step, built only from stored rows, so a resumed step sends exactly
/// what the first attempt sent (Stripe refuses a reused idempotency key with other parameters).
enum StripeRequests {
    static func checkoutSession(for payment: PaymentRecord) -> CheckoutSessionRequest {
        var metadata = payment.metadata.map { (key: $0.key, value: $0.value) }
        metadata.append((key: "deal_id", value: payment.dealID))
        metadata.append((key: "payment_id", value: payment.paymentID))
        if !payment.customerRef.isEmpty { metadata.append((key: "customer_ref", value: payment.customerRef)) }
        let mode: CheckoutSessionRequest.Mode
        switch payment.mode {
        case .payment: mode = .payment
        case .subscription: mode = .subscription
        }
        return CheckoutSessionRequest(
            mode: mode, currency: payment.currency, clientReferenceID: payment.dealID, successURL: payment.successURL,
            cancelURL: payment.cancelURL, expiresAt: payment.expiresAt,
            lineItems: payment.items.map { item in
                switch payment.mode {
                case .subscription:
                    CheckoutSessionRequest.LineItem(quantity: item.quantity, price: .stripe(id: item.priceID))
                case .payment:
                    CheckoutSessionRequest.LineItem(
                        quantity: item.quantity,
                        price: .inline(unitAmount: item.unitAmount, productName: item.name, sku: item.sku))
                }
            },
            metadata: metadata,
            ownerMetadata: [(key: "deal_id", value: payment.dealID), (key: "payment_id", value: payment.paymentID)])
    }

    static func refund(_ refund: RefundRecord, of payment: PaymentRecord, paymentIntent: String) -> RefundRequest {
        let reason: RefundRequest.Reason? =
            switch refund.reason {
            case nil: nil
            case .requestedByCustomer: .requestedByCustomer
            case .duplicate: .duplicate
            case .fraudulent: .fraudulent
            }
        return RefundRequest(
            paymentIntent: paymentIntent, amount: refund.amount, reason: reason,
            metadata: [
                (key: "refund_id", value: refund.refundID), (key: "payment_id", value: payment.paymentID),
                (key: "deal_id", value: payment.dealID), (key: "cause", value: refund.cause),
            ])
    }
}
