import PaymentsDomain
import PaymentsRPC
import PaymentsStore
import PaymentsWire

/// The one place where domain refusals become wire statuses (protocol.md section 4).
extension PaymentsError: RPCErrorConvertible {
    public var rpcError: RPCError {
        switch self {
        case .invalidField(let field, let message):
            RPCError.invalidField(field, message)
        case .dealNotFound(let id):
            RPCError(.notFound, "deal_not_found", "no payment for this deal", details: [Header("deal_id", id)])
        case .paymentNotFound(let id):
            RPCError(.notFound, "payment_not_found", "no such payment", details: [Header("payment_id", id)])
        case .skuNotFound(let sku):
            RPCError(.notFound, "sku_not_found", "the SKU has no stock record", details: [Header("sku", sku)])
        case .insufficientStock(let sku):
            RPCError(.failedPrecondition, "insufficient_stock", "not enough stock", details: [Header("sku", sku)])
        case .stockBelowReserved(let sku, let reserved):
            RPCError(
                .failedPrecondition, "stock_below_reserved", "stock on hand cannot go below the \(reserved) units reserved",
                details: [Header("sku", sku), Header("reserved", String(reserved))])
        case .checkoutInProgress(let paymentID):
            RPCError(
                .alreadyExists, "checkout_in_progress", "the deal has another open checkout",
                details: [Header("payment_id", paymentID)])
        case .checkoutNotOpen(let paymentID):
            RPCError(
                .failedPrecondition, "checkout_not_open", "the deal has no open checkout",
                details: [Header("payment_id", paymentID)])
        case .badSignature:
            RPCError(.unauthenticated, "bad_signature", "the Stripe-Signature does not match the body")
        case .timestampOutsideTolerance:
            RPCError(.unauthenticated, "timestamp_outside_tolerance", "the signature's timestamp is too far from now")
        case .alreadyPaid(let paymentID):
            RPCError(.failedPrecondition, "already_paid", "the deal is paid", details: [Header("payment_id", paymentID)])
        case .alreadyRefunded(let paymentID):
            RPCError(
                .failedPrecondition, "already_refunded", "the deal's payment was refunded",
                details: [Header("payment_id", paymentID)])
        case .paymentNotPaid(let paymentID, let status):
            RPCError(
                .failedPrecondition, "payment_not_paid", "only a PAID or PARTIALLY_REFUNDED payment can be refunded",
                details: [Header("payment_id", paymentID), Header("status", status)])
        case .refundExceedsRemaining(let remaining):
            RPCError(
                .outOfRange, "refund_exceeds_remaining", "the refund is larger than what remains of the payment",
                details: [Header("remaining", String(remaining))])
        case .stripeRejected(let code, let message):
            RPCError(
                .failedPrecondition, "stripe_rejected", "Stripe rejected the request: \(message)",
                details: code.isEmpty ? [] : [Header("stripe_code", code)])
        case .stripeUnavailable:
            RPCError(
                .unavailable, "stripe_unavailable", "Stripe could not be reached; retry with the same idempotency key")
        case .lockTimeout:
            RPCError(.deadlineExceeded, "lock_timeout", "the deal stayed busy until the call's deadline")
        case .idempotencyKeyReused:
            RPCError(
                .invalidArgument, "idempotency_key_reused",
                "this idempotency key was used with another method or payload")
        case .claimTaken(let key):
            RPCError(
                .alreadyExists, "claim_taken", "the name is held or taken by another deal", details: [Header("key", key)])
        case .claimHeld(let key, let dealID):
            RPCError(
                .failedPrecondition, "claim_held", "an open checkout holds the name; cancel that checkout instead",
                details: [Header("key", key), Header("deal_id", dealID)])
        case .claimNotFound(let key):
            RPCError(.notFound, "claim_not_found", "nobody has this name", details: [Header("key", key)])
        case .priceMismatch(let expected, let stripe):
            RPCError(
                .failedPrecondition, "price_mismatch",
                "Stripe's prices charge another amount than the items say; the checkout was not opened",
                details: [Header("expected", String(expected)), Header("stripe", stripe.map(String.init) ?? "unknown")])
        }
    }
}
