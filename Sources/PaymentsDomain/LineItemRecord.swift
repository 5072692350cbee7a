/// A line item as bought.
public struct LineItemRecord: Sendable, Equatable {
    public var sku: String
    public var name: String
    public var quantity: Int64
    public var unitAmount: Int64
    public var priceID: String

    public init(sku: String, name: String, quantity: Int64, unitAmount: Int64, priceID: String) {
        self.sku = sku
        self.name = name
        self.quantity = quantity
        self.unitAmount = unitAmount
        self.priceID = priceID
    }
}
