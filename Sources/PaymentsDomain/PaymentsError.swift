/// What a command refuses, as the protocol names it (protocol.md section 4).
///
/// The service layer maps each case to its status code and reason in one
/// place; the engine only says what happened.
public enum PaymentsError: Error, Sendable, Equatable {
    case invalidField(field: String, message: String)
    case dealNotFound(String)
    case paymentNotFound(String)
    case skuNotFound(String)
    case insufficientStock(sku: String)
    case stockBelowReserved(sku: String, reserved: Int64)
    case checkoutInProgress(paymentID: String)
    /// CancelCheckout of a deal whose latest checkout is no longer open.
    case checkoutNotOpen(paymentID: String)
    case badSignature
    case timestampOutsideTolerance
    case alreadyPaid(paymentID: String)
    case alreadyRefunded(paymentID: String)
    /// A refund of a payment that is not PAID or PARTIALLY_REFUNDED.
    case paymentNotPaid(paymentID: String, status: String)
    /// A refund larger than what remains of the payment; `remaining` may be refunded.
    case refundExceedsRemaining(remaining: Int64)
    /// Stripe refused the request; `code` is Stripe's error code (may be empty).
    case stripeRejected(code: String, message: String)
    /// Stripe's answer is unknown; the operation resumes later with the same idempotency key.
    case stripeUnavailable
    case lockTimeout
    case idempotencyKeyReused
    /// A name held or taken by another deal (guarantee 6).
    case claimTaken(key: String)
    /// ReleaseClaim of a name an open checkout holds.
    case claimHeld(key: String, dealID: String)
    /// ReleaseClaim of a name nobody has.
    case claimNotFound(String)
    /// The amounts a caller gave for a subscription's Stripe prices differ from what Stripe will
    /// charge (`stripe`, nil when Stripe did not say).
    case priceMismatch(expected: Int64, stripe: Int64?)
}
