/// What paymentsd asks of `POST /v1/checkout/sessions`, as typed values; `form` is the one place
/// that knows Stripe's parameter names and nesting.
///
/// Built only from stored rows, so a resumed step sends exactly what the first attempt sent
/// (Stripe refuses a reused idempotency key with other parameters).
public struct CheckoutSessionRequest: Sendable, Equatable {
    public enum Mode: Sendable, Equatable {
        case payment
        case subscription
    }

    public struct LineItem: Sendable, Equatable {
        public enum Price: Sendable, Equatable {
            /// A Stripe price (subscriptions).
            case stripe(id: String)
            /// An amount of the session's currency for a product named here (one-off payments).
            case inline(unitAmount: Int64, productName: String, sku: String)
        }

        public var quantity: Int64
        public var price: Price

        public init(quantity: Int64, price: Price) {
            self.quantity = quantity
            self.price = price
        }
    }

    public var mode: Mode
    public var currency: String
    public var clientReferenceID: String
    public var successURL: String
    public var cancelURL: String
    /// Unix seconds; Stripe wants it 30 min to 24 h ahead.
    public var expiresAt: Int64
    public var lineItems: [LineItem]
    /// The session's metadata, in order.
    public var metadata: [(key: String, value: String)]
    /// Metadata also set on what the session makes (its payment intent, or its subscription), so
    /// that refund, charge and subscription events find their payment.
    public var ownerMetadata: [(key: String, value: String)]

    public init(
        mode: Mode, currency: String, clientReferenceID: String, successURL: String, cancelURL: String,
        expiresAt: Int64, lineItems: [LineItem], metadata: [(key: String, value: String)],
        ownerMetadata: [(key: String, value: String)]
    ) {
        self.mode = mode
        self.currency = currency
        self.clientReferenceID = clientReferenceID
        self.successURL = successURL
        self.cancelURL = cancelURL
        self.expiresAt = expiresAt
        self.lineItems = lineItems
        self.metadata = metadata
        self.ownerMetadata = ownerMetadata
    }

    /// Stripe's form: `line_items[0][price_data][unit_amount]=...` and so on.
    var form: FormParameters {
        var form = FormParameters()
        form.add("mode", self.mode == .subscription ? "subscription" : "payment")
        form.add("client_reference_id", self.clientReferenceID)
        form.add("success_url", self.successURL)
        form.add("cancel_url", self.cancelURL)
        form.add("expires_at", self.expiresAt)
        for (index, item) in self.lineItems.enumerated() {
            let prefix = "line_items[\(index)]"
            form.add("\(prefix)[quantity]", item.quantity)
            switch item.price {
            case .stripe(let id):
                form.add("\(prefix)[price]", id)
            case .inline(let unitAmount, let productName, let sku):
                form.add("\(prefix)[price_data][currency]", self.currency)
                form.add("\(prefix)[price_data][unit_amount]", unitAmount)
                form.add("\(prefix)[price_data][product_data][name]", productName)
                form.add("\(prefix)[price_data][product_data][metadata][sku]", sku)
            }
        }
        for entry in self.metadata { form.add("metadata[\(entry.key)]", entry.value) }
        // Stripe takes no payment_intent_data for subscriptions; the subscription carries the ids.
        let owner = self.mode == .subscription ? "subscription_data" : "payment_intent_data"
        for entry in self.ownerMetadata { form.add("\(owner)[metadata][\(entry.key)]", entry.value) }
        return form
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.form == rhs.form
    }
}
