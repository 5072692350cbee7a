import Logging
import PaymentsStore
import PaymentsWire
import StripeClient

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
/// The steps after the first are the same code whether a caller runs them
/// or `resumeUnfinished` does after a crash; the Stripe key never changes,
/// so a resumed call gets back the session Stripe already made.
public final class CheckoutEngine: Sendable {
    public struct Configuration: Sendable {
        /// Seconds a checkout stays open (PAYMENTSD_CHECKOUT_TTL).
        public var checkoutTTL: Int64 = 1800
        /// How long a resumed step may take.
        public var resumeTimeout: Duration = .seconds(30)

        public init() {}
    }

    let store: Store
    let stripe: StripeClient
    /// Refunds share this engine's store, Stripe client, locks and clock: late payments start
    /// them, and the operations this engine resumes include theirs.
    public let refunds: RefundEngine
    private let locks: KeyedLockTable<String>
    private let configuration: Configuration
    let logger: Logger
    let now: @Sendable () -> Int64

    public init(
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

    /// The reason recorded on an expiry the janitor starts for a checkout past its time.
    static let expiredByTime = "expired_by_time"

    /// Opens a checkout for the deal, or returns the open one (`created == false`). A subscription
    /// checkout takes its customer's lock before the deal's: one fixed order, so no two commands
    /// can each hold the lock the other waits for.
    public func createCheckout(_ request: CheckoutRequest, deadline: ContinuousClock.Instant) async throws
        -> (payment: PaymentRecord, created: Bool)
    {
        switch request.mode {
        case .subscription:
            do {
                return try await self.locks.withLock(Self.customerLock(request.customerRef), deadline: deadline) {
                    try await self.withDealLock(request.dealID, deadline: deadline) {
                        try await self.createCheckoutLocked(request, deadline: deadline)
                    }
                }
            } catch is LockTimeout {
                throw PaymentsError.lockTimeout
            }
        case .payment, .unspecified:
            return try await self.withDealLock(request.dealID, deadline: deadline) {
                try await self.createCheckoutLocked(request, deadline: deadline)
            }
        }
    }

    /// The lock key of a customer, taken before a deal's by subscription checkouts (guarantee 2).
    static func customerLock(_ customerRef: String) -> String { "customer:\(customerRef)" }

    private func createCheckoutLocked(_ request: CheckoutRequest, deadline: ContinuousClock.Instant) async throws
        -> (payment: PaymentRecord, created: Bool)
    {
        while true {
            switch try await self.decide(request) {
            case .inserted(let paymentID):
                return (try await self.createSession(paymentID: paymentID, deadline: deadline), true)
            case .existing(let payment) where payment.checkoutSessionID == nil:
                // An earlier call recorded the payment but never learned Stripe's answer: finish it.
                _ = try await self.createSession(paymentID: payment.paymentID, deadline: deadline)
            case .existing(let payment):
                return (payment, false)
            case .replace(let old):
                try await self.startExpiry(of: old, reason: "replaced")
                try await self.expireSession(
                    paymentID: old.paymentID, crashPoint: "create_checkout.replaced_session_expired",
                    deadline: deadline)
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
                    try await self.startExpiry(of: open, reason: Self.replacedForCustomer)
                    try await self.expireSession(
                        paymentID: open.paymentID, crashPoint: "create_checkout.customer_session_replaced",
                        deadline: deadline)
                    return nil
                }
                if let found, found.status == .created { return (found, false) }
            }
        }
    }

    /// The reason recorded when a customer's subscription checkout on another deal is replaced.
    static let replacedForCustomer = "replaced_for_customer"

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
            if let paid = payments.first(where: { $0.status == .paid || $0.status == .partiallyRefunded }) {
                throw PaymentsError.alreadyPaid(paymentID: paid.paymentID)
            }
            if let refunded = payments.first(where: { $0.status == .refunded }) {
                throw PaymentsError.alreadyRefunded(paymentID: refunded.paymentID)
            }
            if let open = payments.first(where: { $0.status == .created }) {
                switch request.onOpen {
                case .unspecified, .returnExisting:
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
                case .unspecified, .returnExisting:
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
            // Stripe wants expires_at at least 30 min ahead when it receives the request; a
            // minute of margin covers the way there, as long as the 24 h ceiling allows it.
            let expiresAt = now + min(ttl + 60, 86_400 - 60)
            try PaymentRecord.insert(db, paymentID: paymentID, request: request, expiresAt: expiresAt, now: now)
            try CheckoutHolds.hold(
                db, paymentID: paymentID, dealID: request.dealID, claims: request.claims, quantities: request.quantities,
                now: now)
            try OperationLog.start(
                db, .createSession, dealID: request.dealID, paymentID: paymentID, recoveryPoint: "payment_recorded",
                now: now)
            try AuditLog.append(
                db, dealID: request.dealID, paymentID: paymentID, kind: "checkout.created", to: "CREATED",
                detail: "amount_total=\(request.amountTotal) currency=\(request.currency)", now: now)
            return .inserted(paymentID: paymentID)
        }
    }

    /// Steps 2 and 3 of a checkout: the Stripe call and its record. Serves live calls and resumes.
    func createSession(paymentID: String, deadline: ContinuousClock.Instant) async throws -> PaymentRecord {
        CrashPoints.reach("create_checkout.payment_recorded")
        guard let payment = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }) else {
            throw PaymentsError.paymentNotFound(paymentID)
        }
        guard payment.status == .created, payment.checkoutSessionID == nil else {
            try await self.store.write { try OperationLog.finish($0, .createSession, paymentID: paymentID, now: self.now()) }
            return payment
        }
        let session: CheckoutSession
        do {
            session = try await self.stripe.createCheckoutSession(
                StripeParameters.checkoutSession(for: payment), idempotencyKey: "paymentsd-\(paymentID)-create-session",
                deadline: deadline)
        } catch StripeError.rejected(_, _, let code, let message) {
            CrashPoints.reach("create_checkout.rejected_by_stripe")
            try await self.store.write { db in
                guard let current = try PaymentRecord.load(db, paymentID: paymentID), current.status == .created else { return }
                try PaymentRecord.transition(
                    db, current, to: .failed, kind: "checkout.rejected_by_stripe", detail: "stripe_code=\(code)",
                    failureReason: "stripe_rejected" + (code.isEmpty ? "" : ": \(code)"), now: self.now())
                try CheckoutHolds.release(db, paymentID: paymentID, now: self.now())
                try OperationLog.finish(db, .createSession, paymentID: paymentID, now: self.now())
            }
            throw PaymentsError.stripeRejected(code: code, message: message)
        } catch let error as StripeError {
            try await self.recordFailure(.createSession, paymentID: paymentID, error: error)
            throw PaymentsError.stripeUnavailable
        }
        CrashPoints.reach("create_checkout.session_created")
        let unwanted: Bool = try await self.store.write { db in
            let now = self.now()
            guard let current = try PaymentRecord.load(db, paymentID: paymentID),
                current.status == .created, current.checkoutSessionID == nil
            else {
                try OperationLog.advance(
                    db, .createSession, paymentID: paymentID, to: "expire_unwanted", detail: session.id, now: now)
                return true
            }
            try db.query(
                "UPDATE payments SET checkout_session_id = ?, checkout_url = ?, updated_at = ? WHERE payment_id = ?",
                session.id, session.url, now, paymentID)
            try AuditLog.append(
                db, dealID: current.dealID, paymentID: paymentID, kind: "checkout.session_created",
                detail: "checkout_session_id=\(session.id)", now: now)
            try OperationLog.finish(db, .createSession, paymentID: paymentID, now: now)
            return false
        }
        if unwanted { try await self.expireUnwanted(paymentID: paymentID, sessionID: session.id, deadline: deadline) }
        CrashPoints.reach("create_checkout.session_recorded")
        return try await self.store.read { try PaymentRecord.load($0, paymentID: paymentID)! }
    }

    /// A session Stripe made for a payment that no longer wants one is expired, never left open (guarantee 3).
    private func expireUnwanted(paymentID: String, sessionID: String, deadline: ContinuousClock.Instant) async throws {
        do {
            _ = try await self.stripe.expireCheckoutSession(
                sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-unwanted", deadline: deadline)
        } catch StripeError.rejected {
            // Not open any more (expired or completed): nothing is left open at Stripe by us.
        } catch let error as StripeError {
            try await self.recordFailure(.createSession, paymentID: paymentID, error: error)
            throw PaymentsError.stripeUnavailable
        }
        self.logger.notice("expired a session the database did not want", metadata: ["payment_id": "\(paymentID)"])
        try await self.store.write { try OperationLog.finish($0, .createSession, paymentID: paymentID, now: self.now()) }
    }

    /// Records the intent to expire a payment's session before Stripe is asked.
    func startExpiry(of payment: PaymentRecord, reason: String) async throws {
        try await self.store.write { db in
            try OperationLog.start(
                db, .expireSession, dealID: payment.dealID, paymentID: payment.paymentID, recoveryPoint: "expiring",
                detail: reason, now: self.now())
        }
    }

    /// Expires the payment's session at Stripe first, then cancels the payment and releases what it held.
    /// If Stripe says the customer paid, the payment is fulfilled instead and the caller told `already_paid`.
    func expireSession(paymentID: String, crashPoint: String, deadline: ContinuousClock.Instant) async throws {
        guard let payment = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }),
            payment.status == .created
        else {
            try await self.store.write { try OperationLog.finish($0, .expireSession, paymentID: paymentID, now: self.now()) }
            return
        }
        if let sessionID = payment.checkoutSessionID {
            do {
                _ = try await self.stripe.expireCheckoutSession(
                    sessionID, idempotencyKey: "paymentsd-\(paymentID)-expire-session", deadline: deadline)
            } catch StripeError.rejected {
                // Stripe expires only open sessions: ask what this one is.
                let session: CheckoutSession
                do {
                    session = try await self.stripe.retrieveCheckoutSession(sessionID, deadline: deadline)
                } catch let error as StripeError {
                    try await self.recordFailure(.expireSession, paymentID: paymentID, error: error)
                    throw PaymentsError.stripeUnavailable
                }
                if session.status == "complete" {
                    try await self.settleCompleted(payment, session)
                    throw session.paymentStatus == "paid"
                        ? PaymentsError.alreadyPaid(paymentID: paymentID)
                        : PaymentsError.checkoutInProgress(paymentID: paymentID)
                }
            } catch let error as StripeError {
                try await self.recordFailure(.expireSession, paymentID: paymentID, error: error)
                throw PaymentsError.stripeUnavailable
            }
        }
        CrashPoints.reach(crashPoint)
        try await self.store.write { db in
            let now = self.now()
            guard let current = try PaymentRecord.load(db, paymentID: paymentID), current.status == .created else { return }
            let reason = try OperationLog.find(db, .expireSession, paymentID: paymentID)?.detail ?? ""
            // Past its time it expired; otherwise somebody (a cancel, a replace) closed it.
            let byTime = reason == Self.expiredByTime
            try PaymentRecord.transition(
                db, current, to: byTime ? .expired : .canceled, kind: byTime ? "checkout.expired" : "checkout.canceled",
                detail: reason.isEmpty ? "" : "reason=\(reason)", now: now)
            try CheckoutHolds.release(db, paymentID: paymentID, now: now)
            try OperationLog.finish(db, .expireSession, paymentID: paymentID, now: now)
        }
    }

    /// A session found complete while trying to expire it: paid means fulfilled; unpaid (an async
    /// method still settling) keeps the checkout open.
    func settleCompleted(_ payment: PaymentRecord, _ session: CheckoutSession) async throws {
        try await self.store.write { db in
            let now = self.now()
            guard let current = try PaymentRecord.load(db, paymentID: payment.paymentID) else { return }
            if session.paymentStatus == "paid" {
                try Fulfilment.apply(db, current, paid: .init(session), source: "expire_refused", now: now)
            }
            try OperationLog.finish(db, .expireSession, paymentID: payment.paymentID, now: now)
        }
    }

    func recordFailure(_ kind: OperationLog.Kind, paymentID: String, error: StripeError) async throws {
        self.logger.warning(
            "Stripe call failed; the operation stays pending", metadata: ["payment_id": "\(paymentID)", "error": "\(error)"])
        try await self.store.write { db in
            try OperationLog.recordFailure(db, kind, paymentID: paymentID, error: "\(error)", now: self.now())
        }
    }

    /// Resumes every unfinished operation that is due (all of them with `force`, as at start-up),
    /// each under its deal's lock, through the same step code as a live call. Returns how many finished.
    @discardableResult
    public func resumeUnfinished(force: Bool) async -> Int {
        let operations: [OperationLog.Record]
        do {
            operations = try await self.store.read { try OperationLog.unfinished($0, now: self.now(), force: force) }
        } catch {
            self.logger.error("cannot list unfinished operations", metadata: ["error": "\(error)"])
            return 0
        }
        var finished = 0
        for operation in operations {
            let deadline = ContinuousClock.now + self.configuration.resumeTimeout
            do {
                try await self.withDealLock(operation.dealID, deadline: deadline) {
                    try await self.resume(operation, deadline: deadline)
                }
                finished += 1
                self.logger.info(
                    "resumed operation", metadata: ["operation": "\(operation.id)", "from": "\(operation.recoveryPoint)"])
            } catch {
                self.logger.warning(
                    "resuming an operation failed; it stays pending",
                    metadata: ["operation": "\(operation.id)", "error": "\(error)"])
            }
        }
        return finished
    }

    private func resume(_ operation: OperationLog.Record, deadline: ContinuousClock.Instant) async throws {
        switch operation.kind {
        case .createSession:
            if operation.recoveryPoint == "expire_unwanted", let sessionID = operation.detail {
                try await self.expireUnwanted(paymentID: operation.paymentID, sessionID: sessionID, deadline: deadline)
            } else {
                _ = try await self.createSession(paymentID: operation.paymentID, deadline: deadline)
            }
        case .sendRefund:
            try await self.refunds.send(refundID: operation.detail ?? "", deadline: deadline)
        case .expireSession:
            do {
                let crashPoint =
                    switch operation.detail {
                    case "replaced": "create_checkout.replaced_session_expired"
                    case Self.replacedForCustomer: "create_checkout.customer_session_replaced"
                    case Self.expiredByTime: "janitor.session_expired"
                    default: "cancel_checkout.session_expired"
                    }
                try await self.expireSession(paymentID: operation.paymentID, crashPoint: crashPoint, deadline: deadline)
            } catch PaymentsError.alreadyPaid, PaymentsError.checkoutInProgress {
                // Settled the other way: the operation is finished, nobody waits for an answer.
            }
        }
    }

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
