import Logging
import PaymentsDomain
import PaymentsStore
import StripeClient
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Opens Stripe Checkout Sessions without ever double-charging (guarantees 1, 3, 5).
///
/// A command runs under its deal's lock as a sequence of steps, each one
/// short `BEGIN IMMEDIATE` transaction or one Stripe call, never both:
///
/// ```
/// decide + insert CREATED payment, reserve stock, start operation   (tx)
///   -- create_checkout.payment_recorded
/// POST /v1/checkout/sessions, Idempotency-Key from the payment id     (Stripe)
///   -- create_checkout.session_created
/// record session id and url, finish operation                         (tx)
///   -- create_checkout.session_recorded
/// ```
/// The steps after the first are `CreateSession.Step`, run by `OperationRunner`, the same code
/// whether a caller runs them or `resumeUnfinished` does after a crash; the Stripe key never
/// changes within an attempt, so a resumed call gets back the session Stripe already made.
public final class CheckoutEngine: Sendable {
    public struct Configuration: Sendable {
        /// Seconds a checkout stays open (PAYMENTSD_CHECKOUT_TTL).
        public var checkoutTTL: Int64 = 1800
        /// How long a resumed step may take.
        public var resumeTimeout: Duration = .seconds(30)
        /// Seconds after its creation an open checkout that no event settled is asked about at
        /// Stripe (PAYMENTSD_ASK_STRIPE_AFTER); then again after a doubling backoff.
        public var askStripeAfter: Int64 = 900
        /// Seconds of events the first catch-up fetches (PAYMENTSD_EVENTS_LOOKBACK).
        public var eventsLookback: Int64 = 3 * 86_400

        public init() {}
    }

    let store: Store
    let stripe: StripeClient
    /// Refunds share this engine's store, Stripe client, locks and clock: late payments start
    /// them, and the operations this engine resumes include theirs.
    public let refunds: RefundEngine
    private let locks: KeyedLockTable<String>
    let configuration: Configuration
    let logger: Logger
    let now: @Sendable () -> Int64
    /// Checkouts settled by asking Stripe (`askStripeAboutOpenCheckouts`).
    let outcomes = Atomic<Int>(0)

    init(
        store: Store, stripe: StripeClient, locks: KeyedLockTable<String>, configuration: Configuration,
        logger: Logger, now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) }
    ) {
        self.store = store
        self.stripe = stripe
        self.refunds = RefundEngine(store: store, stripe: stripe, locks: locks, logger: logger, now: now)
        self.locks = locks
        self.configuration = configuration
        self.logger = logger
        self.now = now
    }

    /// Opens a checkout for the deal, or returns the open one (`created == false`). A subscription
    /// checkout takes its customer's lock before the deal's: one fixed order, so no two commands
    /// can each hold the lock the other waits for.
    ///
    /// `answer` stores the answer of the call that opens the checkout in the transaction that
    /// records its session (or its refusal by Stripe); returning an open checkout changes nothing,
    /// so the caller stores that answer itself.
    public func createCheckout(
        _ request: CheckoutRequest, answer: AnswerRecorder<PaymentRecord>? = nil, deadline: ContinuousClock.Instant
    ) async throws -> (payment: PaymentRecord, created: Bool) {
        switch request.mode {
        case .subscription:
            do {
                return try await self.locks.withLock(Self.customerLock(request.customerRef), deadline: deadline) {
                    try await self.withDealLock(request.dealID, deadline: deadline) {
                        try await self.createCheckoutLocked(request, answer: answer, deadline: deadline)
                    }
                }
            } catch is LockTimeout {
                throw PaymentsError.lockTimeout
            }
        case .payment:
            return try await self.withDealLock(request.dealID, deadline: deadline) {
                try await self.createCheckoutLocked(request, answer: answer, deadline: deadline)
            }
        }
    }

    /// The lock key of a customer, taken before a deal's by subscription checkouts (guarantee 2).
    static func customerLock(_ customerRef: String) -> String { "customer:\(customerRef)" }

    private func createCheckoutLocked(
        _ request: CheckoutRequest, answer: AnswerRecorder<PaymentRecord>?, deadline: ContinuousClock.Instant
    ) async throws -> (payment: PaymentRecord, created: Bool) {
        while true {
            switch try await self.decide(request) {
            case .inserted(let paymentID):
                return (try await self.createSession(paymentID: paymentID, answer: answer, deadline: deadline), true)
            case .existing(let payment) where payment.checkoutSessionID == nil:
                // An earlier call recorded the payment but never learned Stripe's answer: finish it.
                _ = try await self.createSession(paymentID: payment.paymentID, deadline: deadline)
            case .existing(let payment):
                return (payment, false)
            case .replace(let old):
                try await self.startExpiry(of: old, cause: .replaced)
                try await self.expireSession(paymentID: old.paymentID, cause: .replaced, deadline: deadline)
            case .customerOpen(let other):
                // The customer's open subscription checkout lives on another deal: acted on under
                // that deal's lock too (customer, this deal, that deal: no command takes them the other way).
                let found = try await self.withDealLock(other.dealID, deadline: deadline) {
                    () async throws -> PaymentRecord? in
                    guard let current = try await self.store.read({ try PaymentRecord.load($0, paymentID: other.paymentID) }),
                        current.status == .created
                    else { return nil }
                    let open =
                        current.checkoutSessionID == nil
                        ? try await self.createSession(paymentID: current.paymentID, deadline: deadline) : current
                    guard request.onOpen == .replace, open.status == .created else { return open }
                    try await self.startExpiry(of: open, cause: .replacedForCustomer)
                    try await self.expireSession(paymentID: open.paymentID, cause: .replacedForCustomer, deadline: deadline)
                    return nil
                }
                if let found, found.status == .created { return (found, false) }
            }
        }
    }

    private enum Decision {
        case inserted(paymentID: String)
        case existing(PaymentRecord)
        case replace(PaymentRecord)
        /// The customer's open subscription checkout on another deal, to return (RETURN_EXISTING,
        /// same prices) or replace (REPLACE).
        case customerOpen(PaymentRecord)
    }

    /// The first step: the rules of protocol.md "Payment states" and `on_open`, and the insert.
    private func decide(_ request: CheckoutRequest) async throws -> Decision {
        let now = self.now()
        let ttl = self.configuration.checkoutTTL
        let paymentID = Self.newID(prefix: "pay_")
        return try await self.store.write { db in
            let payments = try PaymentRecord.all(db, dealID: request.dealID)
            if let deciding = PaymentCommand.deciding(payments), let refusal = PaymentCommand.createCheckout.refusal(deciding) {
                throw refusal
            }
            if let open = payments.first(where: { $0.status == .created }) {
                switch request.onOpen {
                case .returnExisting:
                    guard open.fingerprint == request.fingerprint else {
                        throw PaymentsError.checkoutInProgress(paymentID: open.paymentID)
                    }
                    return .existing(open)
                case .replace:
                    try ClaimLedger.ensureFree(db, keys: request.claims, replacing: open.paymentID)
                    // A payment whose session is not known yet is finished first, then replaced.
                    return open.checkoutSessionID == nil ? .existing(open) : .replace(open)
                case .reject:
                    throw PaymentsError.checkoutInProgress(paymentID: open.paymentID)
                }
            }
            if request.mode == .subscription,
                let other = try PaymentRecord.openSubscription(db, customerRef: request.customerRef)
            {
                switch request.onOpen {
                case .returnExisting:
                    guard other.prices == request.prices, Set(other.claims) == Set(request.claims) else {
                        throw PaymentsError.checkoutInProgress(paymentID: other.paymentID)
                    }
                    return .customerOpen(other)
                case .replace:
                    try ClaimLedger.ensureFree(db, keys: request.claims, replacing: other.paymentID)
                    return .customerOpen(other)
                case .reject:
                    throw PaymentsError.checkoutInProgress(paymentID: other.paymentID)
                }
            }
            let expiresAt = Self.expiresAt(now: now, ttl: ttl)
            try PaymentRecord.insert(db, paymentID: paymentID, request: request, expiresAt: expiresAt, now: now)
            try CheckoutHolds.hold(
                db, paymentID: paymentID, dealID: request.dealID, claims: request.claims, quantities: request.quantities,
                now: now)
            try OperationLog.start(
                db, .createSession, dealID: request.dealID, paymentID: paymentID, recoveryPoint: .paymentRecorded,
                now: now)
            try AuditLog.append(
                db, dealID: request.dealID, paymentID: paymentID, kind: "checkout.created", to: "CREATED",
                detail: "amount_total=\(request.amountTotal) currency=\(request.currency)", now: now)
            return .inserted(paymentID: paymentID)
        }
    }

    /// Stripe wants `expires_at` at least 30 min ahead when it receives the request; a minute
    /// of margin covers the way there, as long as the 24 h ceiling allows it.
    static func expiresAt(now: Int64, ttl: Int64) -> Int64 { now + min(ttl + 60, 86_400 - 60) }

    /// The shortest time ahead Stripe accepts for a session's `expires_at`.
    static let stripeMinimumExpiry: Int64 = 1800

    func withDealLock<Result: Sendable>(
        _ dealID: String, deadline: ContinuousClock.Instant, _ body: () async throws -> Result
    ) async throws -> Result {
        try await self.locks.withDealLock(dealID, deadline: deadline, body)
    }

    /// A new random identifier: prefix and 24 characters of [0-9a-z].
    static func newID(prefix: String) -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        var generator = SystemRandomNumberGenerator()
        return prefix + String((0..<24).map { _ in alphabet[Int(generator.next(upperBound: UInt32(alphabet.count)))] })
    }
}
