/// What paymentsd asks of `POST /v1/refunds`.
public struct RefundRequest: Sendable, Equatable {
    public enum Reason: String, Sendable, Equatable {
        case requestedByCustomer = "requested_by_customer"
        case duplicate
        case fraudulent
    }

    public var paymentIntent: String
    public var amount: Int64
    public var reason: Reason?
    /// Set on the refund; `refund_id` names paymentsd's row, so a lookup finds it again.
    public var metadata: [(key: String, value: String)]

    public init(paymentIntent: String, amount: Int64, reason: Reason?, metadata: [(key: String, value: String)]) {
        self.paymentIntent = paymentIntent
        self.amount = amount
        self.reason = reason
        self.metadata = metadata
    }

    var form: FormParameters {
        var form = FormParameters()
        form.add("payment_intent", self.paymentIntent)
        form.add("amount", self.amount)
        if let reason = self.reason { form.add("reason", reason.rawValue) }
        for entry in self.metadata { form.add("metadata[\(entry.key)]", entry.value) }
        return form
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.form == rhs.form
    }
}
