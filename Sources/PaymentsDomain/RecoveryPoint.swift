/// Where an unfinished operation got to, as committed with its last step: the next run (a retry,
/// the janitor's resume) starts from here. Stored in `operations.recovery_point`.
public enum RecoveryPoint: String, Sendable, CaseIterable {
    /// Create a session: the CREATED payment is committed; next, Stripe's session create.
    case paymentRecorded = "payment_recorded"
    /// Create a session: Stripe made a session the payment no longer wants (its `detail` names
    /// it); next, expire it at Stripe.
    case expireUnwanted = "expire_unwanted"
    /// Expire a session: the intent and its cause are committed; next, Stripe's expire.
    case expiring
    /// Send a refund: the PENDING refund is committed; next, Stripe's refund create.
    case refundRecorded = "refund_recorded"
    /// Finished.
    case done
}
