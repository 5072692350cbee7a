import PaymentsWire

/// A validated CreateCheckout request (see `CheckoutRequest.validate`).
public struct CheckoutRequest: Sendable, Equatable {
    public var dealID: String
    public var customerRef: String
    public var mode: Mode
    public var currency: String
    public var items: [LineItemRecord]
    public var successURL: String
    public var cancelURL: String
    public var onOpen: OnOpen
    public var metadata: [Header]

    public init(
        dealID: String, customerRef: String, mode: Mode, currency: String, items: [LineItemRecord], successURL: String,
        cancelURL: String, onOpen: OnOpen, metadata: [Header]
    ) {
        self.dealID = dealID
        self.customerRef = customerRef
        self.mode = mode
        self.currency = currency
        self.items = items
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

    /// Mode, currency and items in one canonical string: two requests with the
    /// same fingerprint ask for the same checkout.
    public var fingerprint: String {
        ([self.mode.name, self.currency]
            + self.items.map { "\($0.sku)|\($0.name)|\($0.quantity)|\($0.unitAmount)|\($0.priceID)" })
            .joined(separator: "\n")
    }
}
