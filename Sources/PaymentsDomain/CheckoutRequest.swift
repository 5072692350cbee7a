/// A validated CreateCheckout request (see `CheckoutRequest.validate`).
public struct CheckoutRequest: Sendable, Equatable {
    public var dealID: String
    public var customerRef: String
    public var mode: PaymentMode
    public var currency: String
    public var items: [LineItemRecord]
    /// Unique names to hold for the deal (guarantee 6), distinct.
    public var claims: [String]
    public var successURL: String
    public var cancelURL: String
    public var onOpen: OnOpen
    public var metadata: [MetadataEntry]

    public init(
        dealID: String, customerRef: String, mode: PaymentMode, currency: String, items: [LineItemRecord],
        claims: [String] = [], successURL: String, cancelURL: String, onOpen: OnOpen, metadata: [MetadataEntry]
    ) {
        self.dealID = dealID
        self.customerRef = customerRef
        self.mode = mode
        self.currency = currency
        self.items = items
        self.claims = claims
        self.successURL = successURL
        self.cancelURL = cancelURL
        self.onOpen = onOpen
        self.metadata = metadata
    }

    public var amountTotal: Int64 { self.items.reduce(0) { $0 + $1.quantity * $1.unitAmount } }

    /// Units per SKU, for reservations (a SKU may appear in several items).
    public var quantities: [String: Int64] {
        self.items.reduce(into: [:]) { $0[$1.sku, default: 0] += $1.quantity }
    }

    /// Mode, currency, items and claims in one canonical string: two requests with the
    /// same fingerprint ask for the same checkout.
    public var fingerprint: String {
        ([self.mode.name, self.currency]
            + self.items.map { "\($0.sku)|\($0.name)|\($0.quantity)|\($0.unitAmount)|\($0.priceID)" }
            + (self.claims.isEmpty ? [] : ["claims|" + self.claims.sorted().joined(separator: "|")]))
            .joined(separator: "\n")
    }

    /// The Stripe prices and quantities a subscription checkout is for: another deal's open
    /// checkout of the customer is "the same" for RETURN_EXISTING when these match.
    public var prices: String {
        Self.prices(self.items)
    }

    public static func prices(_ items: [LineItemRecord]) -> String {
        items.map { "\($0.priceID)x\($0.quantity)" }.sorted().joined(separator: ",")
    }
}
