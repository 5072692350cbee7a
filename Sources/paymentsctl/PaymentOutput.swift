import PaymentsWire

/// A payment as printed by paymentsctl: one line for people, an object for `--json`.
struct PaymentOutput: Encodable {
    struct Item: Encodable {
        let sku: String
        let name: String
        let quantity: Int64
        let unit_amount: Int64
    }

    let payment_id: String
    let deal_id: String
    let customer_ref: String
    let status: String
    let currency: String
    let amount_total: Int64
    let amount_refunded: Int64
    let checkout_session_id: String
    let checkout_url: String
    let expires_at: Int64
    let payment_intent_id: String
    let order_id: String
    let created: Bool
    let failure_reason: String
    let created_at: Int64
    let updated_at: Int64
    let items: [Item]
    let claims: [String]
    let subscription_id: String
    let refunds: [RefundOutput]

    init(_ payment: Payment) {
        self.payment_id = payment.paymentID
        self.deal_id = payment.dealID
        self.customer_ref = payment.customerRef
        self.status = payment.status.name
        self.currency = payment.currency
        self.amount_total = payment.amountTotal
        self.amount_refunded = payment.amountRefunded
        self.checkout_session_id = payment.checkoutSessionID
        self.checkout_url = payment.checkoutURL
        self.expires_at = payment.expiresAt
        self.payment_intent_id = payment.paymentIntentID
        self.order_id = payment.orderID
        self.created = payment.created
        self.failure_reason = payment.failureReason
        self.created_at = payment.createdAt
        self.updated_at = payment.updatedAt
        self.items = payment.items.map { Item(sku: $0.sku, name: $0.name, quantity: $0.quantity, unit_amount: $0.unitAmount) }
        self.claims = payment.claims
        self.subscription_id = payment.subscriptionID
        self.refunds = payment.refunds.map(RefundOutput.init)
    }

    static func line(_ payment: Payment) -> String {
        var text = "\(payment.paymentID) \(payment.status.name) deal=\(payment.dealID) "
            + "amount=\(payment.amountTotal) \(payment.currency)"
        if payment.created { text += " created" }
        if !payment.checkoutURL.isEmpty { text += " url=\(payment.checkoutURL)" }
        if !payment.orderID.isEmpty { text += " order=\(payment.orderID)" }
        if !payment.failureReason.isEmpty { text += " failure=\(payment.failureReason)" }
        if !payment.claims.isEmpty { text += " claims=\(payment.claims.joined(separator: ","))" }
        if !payment.subscriptionID.isEmpty { text += " subscription=\(payment.subscriptionID)" }
        if payment.amountRefunded > 0 { text += " refunded=\(payment.amountRefunded)" }
        for refund in payment.refunds { text += "\n  refund " + RefundOutput.line(refund) }
        return text
    }
}

/// Stock as printed by paymentsctl.
struct StockOutput: Encodable {
    let sku: String
    let on_hand: Int64
    let reserved: Int64
    let available: Int64

    init(_ stock: Stock) {
        self.sku = stock.sku
        self.on_hand = stock.onHand
        self.reserved = stock.reserved
        self.available = stock.available
    }

    static func line(_ stock: Stock) -> String {
        "\(stock.sku) on_hand=\(stock.onHand) reserved=\(stock.reserved) available=\(stock.available)"
    }
}
