import PaymentsDomain
import PaymentsEngine
import PaymentsStore
import PaymentsWire

/// Checks every field of a CreateCheckout request (protocol.md section 4) and
/// names the first one out of its domain.
enum CheckoutValidation {
    static func validate(_ request: CreateCheckoutRequest) throws -> CheckoutRequest {
        try Field.identifier(request.dealID, "deal_id")
        let subscription: Bool
        guard let mode = request.mode.domain else {
            throw PaymentsError.invalidField(field: "mode", message: "mode must be PAYMENT or SUBSCRIPTION")
        }
        switch mode {
        case .payment:
            subscription = false
            if !request.customerRef.isEmpty { try Field.identifier(request.customerRef, "customer_ref") }
        case .subscription:
            subscription = true
            // The customer is who "one open subscription checkout" is counted for (guarantee 2).
            try Field.identifier(request.customerRef, "customer_ref")
        }
        try Field.check(request.claims.count <= 20, "claims", "at most 20 claims")
        for (index, key) in request.claims.enumerated() {
            try Field.identifier(key, "claims[\(index)]")
        }
        try Field.check(Set(request.claims).count == request.claims.count, "claims", "a claim is named once")
        try Field.check(
            request.currency.utf8.count == 3 && request.currency.utf8.allSatisfy { (0x61...0x7A).contains($0) },
            "currency", "currency must be a lowercase ISO-4217 code such as \"usd\"")
        try Field.check(
            (1...100).contains(request.items.count), "items", "a checkout needs 1 to 100 items")
        var total: Int64 = 0
        for (index, item) in request.items.enumerated() {
            let name = "items[\(index)]"
            try Field.identifier(item.sku, "\(name).sku")
            try Field.check(
                (1...250).contains(item.name.unicodeScalars.count) && Field.isPrintable(item.name), "\(name).name",
                "an item's name is 1 to 250 printable characters")
            try Field.check((1...1000).contains(item.quantity), "\(name).quantity", "quantity must be 1 to 1000")
            if subscription {
                try Field.check(
                    Field.isPriceID(item.priceID), "\(name).price_id",
                    "a subscription item names a Stripe price: price_ and 1 to 122 of [A-Za-z0-9_]")
                // An amount here is what the caller expects the price to charge; Stripe's answer is
                // checked against it. 0 leaves it to the price.
                try Field.check(
                    (0...99_999_999).contains(item.unitAmount), "\(name).unit_amount",
                    "a subscription item's unit_amount is 0 (the price decides) or 1 to 99999999 minor units")
            } else {
                try Field.check(
                    (1...99_999_999).contains(item.unitAmount), "\(name).unit_amount",
                    "unit_amount must be 1 to 99999999 minor units")
                try Field.check(item.priceID.isEmpty, "\(name).price_id", "price_id is for subscription checkouts only")
            }
            total += item.quantity * item.unitAmount
        }
        try Field.check(total <= 99_999_999, "items", "the checkout's total must not exceed 99999999 minor units")
        try Field.url(request.successURL, "success_url")
        try Field.url(request.cancelURL, "cancel_url")
        try Field.check(request.metadata.count <= 20, "metadata", "at most 20 metadata entries")
        let reserved: Set<String> = ["deal_id", "payment_id", "customer_ref"]
        var keys = Set<String>()
        for entry in request.metadata {
            try Field.check(
                // Stripe counts code points, and a bracket would split the key in its form encoding.
                (1...40).contains(entry.key.unicodeScalars.count) && Field.isPrintable(entry.key)
                    && !entry.key.contains("[") && !entry.key.contains("]") && !reserved.contains(entry.key)
                    && keys.insert(entry.key).inserted,
                "metadata",
                "metadata keys are 1 to 40 printable characters without [ ], unique, and not deal_id, payment_id or customer_ref")
            try Field.check(
                entry.value.unicodeScalars.count <= 500 && Field.isPrintable(entry.value), "metadata",
                "metadata values are at most 500 printable characters")
        }
        return CheckoutRequest(
            dealID: request.dealID, customerRef: request.customerRef, mode: mode, currency: request.currency,
            items: request.items.map {
                LineItemRecord(sku: $0.sku, name: $0.name, quantity: $0.quantity, unitAmount: $0.unitAmount, priceID: $0.priceID)
            },
            claims: request.claims, successURL: request.successURL, cancelURL: request.cancelURL,
            onOpen: request.onOpen.domain, metadata: request.metadata.map { MetadataEntry($0.key, $0.value) })
    }
}

/// Field checks shared by every method.
enum Field {
    /// A Stripe price id: `price_` then 1-122 of [A-Za-z0-9_].
    static func isPriceID(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        return value.hasPrefix("price_") && (7...128).contains(bytes.count)
            && bytes.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x5F }
    }

    /// 1-128 characters of [A-Za-z0-9_.:-] (deal ids, payment ids, SKUs, claim keys, customer refs).
    static func identifier(_ value: String, _ field: String) throws {
        let bytes = Array(value.utf8)
        let valid =
            (1...128).contains(bytes.count)
            && bytes.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"),
                    UInt8(ascii: "-"):
                    true
                default: false
                }
            }
        try Self.check(valid, field, "\(field) must be 1 to 128 characters of A-Z a-z 0-9 _ . : -")
    }

    static func url(_ value: String, _ field: String) throws {
        try Self.check(
            (value.hasPrefix("https://") || value.hasPrefix("http://")) && value.utf8.count <= 2048
                && value.utf8.allSatisfy { (0x21...0x7E).contains($0) },
            field, "\(field) must be an http:// or https:// URL of at most 2048 characters")
    }

    static func isPrintable(_ value: String) -> Bool {
        value.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }
    }

    static func check(_ condition: Bool, _ field: String, _ message: String) throws {
        guard condition else { throw PaymentsError.invalidField(field: field, message: message) }
    }
}
