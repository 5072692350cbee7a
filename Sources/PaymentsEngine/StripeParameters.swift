import StripeClient

/// The Stripe parameters of a step, built only from stored rows, so a
/// resumed step sends exactly what the first attempt sent (Stripe refuses a
/// reused idempotency key with other parameters).
enum StripeParameters {
    static func checkoutSession(for payment: PaymentRecord) -> FormParameters {
        var form = FormParameters()
        form.add("mode", payment.mode == .subscription ? "subscription" : "payment")
        form.add("client_reference_id", payment.dealID)
        form.add("success_url", payment.successURL)
        form.add("cancel_url", payment.cancelURL)
        form.add("expires_at", payment.expiresAt)
        for (index, item) in payment.items.enumerated() {
            let prefix = "line_items[\(index)]"
            form.add("\(prefix)[quantity]", item.quantity)
            switch payment.mode {
            case .subscription:
                form.add("\(prefix)[price]", item.priceID)
            case .payment, .unspecified:
                form.add("\(prefix)[price_data][currency]", payment.currency)
                form.add("\(prefix)[price_data][unit_amount]", item.unitAmount)
                form.add("\(prefix)[price_data][product_data][name]", item.name)
                form.add("\(prefix)[price_data][product_data][metadata][sku]", item.sku)
            }
        }
        for entry in payment.metadata { form.add("metadata[\(entry.key)]", entry.value) }
        form.add("metadata[deal_id]", payment.dealID)
        form.add("metadata[payment_id]", payment.paymentID)
        if !payment.customerRef.isEmpty { form.add("metadata[customer_ref]", payment.customerRef) }
        switch payment.mode {
        case .subscription:
            // Stripe takes no payment_intent_data here; the subscription carries the ids, so its
            // customer.subscription.* events find their payment.
            form.add("subscription_data[metadata][deal_id]", payment.dealID)
            form.add("subscription_data[metadata][payment_id]", payment.paymentID)
        case .payment, .unspecified:
            // The payment intent carries the ids too, so refunds and charge events find their payment.
            form.add("payment_intent_data[metadata][deal_id]", payment.dealID)
            form.add("payment_intent_data[metadata][payment_id]", payment.paymentID)
        }
        return form
    }
}
