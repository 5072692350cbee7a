import Logging
import PaymentsDomain
import PaymentsStore
import StripeClient

/// Refunds that add up (guarantee 7): never more than was paid, never made twice.
///
/// Under the deal's lock, as steps with a recovery point between each:
///
/// ```
/// guards + insert PENDING refund row, start operation             (tx)
///   -- refund_payment.refund_recorded
/// POST /v1/refunds, Idempotency-Key from the refund id             (Stripe)
///   -- refund_payment.stripe_answered
/// record SUCCEEDED / PENDING / FAILED and its effects, finish      (tx)
///   -- refund_payment.result_recorded
/// ```
/// The steps after the first are `SendRefund.Step`, run by `OperationRunner`. A step resumed after
/// Stripe's 24 h key window first looks the refund up among the payment's refunds at Stripe by the
/// refund id in its metadata, so it is never sent blindly twice.
public final class RefundEngine: Sendable {
    /// What RefundPayment asks for.
    public struct Request: Sendable {
        public var payment: CheckoutEngine.PaymentKey
        /// 0: all that remains.
        public var amount: Int64
        /// Nil when the caller gave none.
        public var reason: RefundReason?
        public var restock: Bool
        /// The caller's uid, idempotency key and request hash: a retry with the key resumes its refund.
        public var callerUID: UInt32
        public var idempotencyKey: String
        public var requestHash: [UInt8]

        public init(
            payment: CheckoutEngine.PaymentKey, amount: Int64, reason: RefundReason?, restock: Bool, callerUID: UInt32,
            idempotencyKey: String, requestHash: [UInt8]
        ) {
            self.payment = payment
            self.amount = amount
            self.reason = reason
            self.restock = restock
            self.callerUID = callerUID
            self.idempotencyKey = idempotencyKey
            self.requestHash = requestHash
        }
    }

    /// Stripe keeps an idempotency key 24 hours; an hour of margin for clocks and the way there.
    static let keyWindow: Int64 = 23 * 3600
    /// How long a caller's idempotency key names its refund (protocol.md section 5).
    static let requestKeyRetention: Int64 = 24 * 3600

    let store: Store
    let stripe: StripeClient
    private let locks: KeyedLockTable<String>
    let logger: Logger
    let now: @Sendable () -> Int64

    init(
        store: Store, stripe: StripeClient, locks: KeyedLockTable<String>, logger: Logger,
        now: @escaping @Sendable () -> Int64
    ) {
        self.store = store
        self.stripe = stripe
        self.locks = locks
        self.logger = logger
        self.now = now
    }

    /// A refund as recorded and the payment after it: what `RefundPayment` answers.
    public struct Result: Sendable {
        public let refund: RefundRecord
        public let payment: PaymentRecord
    }

    /// `RefundPayment`: returns the refund as recorded and the payment after it. `answer` is stored
    /// in the transaction that records Stripe's answer.
    public func refund(
        _ request: Request, answer: AnswerRecorder<Result>? = nil, deadline: ContinuousClock.Instant
    ) async throws -> Result {
        let dealID = try await self.store.read { db in try Self.dealID(db, request.payment) }
        return try await self.locks.withDealLock(dealID, deadline: deadline) {
            let refundID = try await self.store.write { db in try self.record(db, request) }
            let result = try await self.send(refundID: refundID, answer: answer, deadline: deadline)
            CrashPoints.reach("refund_payment.result_recorded")
            return result
        }
    }

    private static func dealID(_ db: any Connection, _ key: CheckoutEngine.PaymentKey) throws -> String {
        switch key {
        case .deal(let dealID):
            guard try PaymentRecord.latest(db, dealID: dealID) != nil else { throw PaymentsError.dealNotFound(dealID) }
            return dealID
        case .payment(let paymentID):
            guard let payment = try PaymentRecord.load(db, paymentID: paymentID) else {
                throw PaymentsError.paymentNotFound(paymentID)
            }
            return payment.dealID
        }
    }

    /// The first step: the refund this request already made (a retry), or the guards and a new PENDING row.
    private func record(_ db: any Connection, _ request: Request) throws -> String {
        let now = self.now()
        if let earlier = try RefundRecord.load(db, callerUID: request.callerUID, requestKey: request.idempotencyKey) {
            if earlier.createdAt > now - Self.requestKeyRetention {
                guard earlier.requestHash == request.requestHash else { throw PaymentsError.idempotencyKeyReused }
                return earlier.refundID
            }
            // The key has expired; it may name a new request now.
            try RefundRecord.forgetRequestKey(db, refundID: earlier.refundID)
        }
        let payment = try Self.refundable(db, request.payment)
        if let refusal = PaymentCommand.refundPayment.refusal(payment) { throw refusal }
        let remaining = try RefundLedger.remaining(db, payment)
        let amount = request.amount == 0 ? remaining : request.amount
        guard amount > 0 else { throw PaymentsError.refundExceedsRemaining(remaining: remaining) }
        return try RefundLedger.insert(
            db, payment, amount: amount, reason: request.reason, restock: request.restock, cause: "request",
            caller: RefundRecord.Caller(uid: request.callerUID, key: request.idempotencyKey, requestHash: request.requestHash),
            now: now)
    }

    /// The payment a refund is for: by id, or the one that decides for the deal (`PaymentCommand.deciding`).
    private static func refundable(_ db: any Connection, _ key: CheckoutEngine.PaymentKey) throws -> PaymentRecord {
        switch key {
        case .payment(let paymentID):
            guard let payment = try PaymentRecord.load(db, paymentID: paymentID) else {
                throw PaymentsError.paymentNotFound(paymentID)
            }
            return payment
        case .deal(let dealID):
            guard let payment = PaymentCommand.deciding(try PaymentRecord.all(db, dealID: dealID)) else {
                throw PaymentsError.dealNotFound(dealID)
            }
            return payment
        }
    }

    /// Steps 2 and 3 (`SendRefund`): Stripe, then the record of its answer. Serves live calls, retries
    /// with the caller's key, late payments and resumes alike; a refund already answered is left as it is.
    @discardableResult
    func send(refundID: String, answer: AnswerRecorder<Result>? = nil, deadline: ContinuousClock.Instant) async throws
        -> Result
    {
        CrashPoints.reach("refund_payment.refund_recorded")
        return try await OperationRunner.run(
            SendRefund(engine: self, refundID: refundID, answer: answer, deadline: deadline), from: .load)
    }

    /// Refunds Stripe left pending whose webhook has not settled them within `age` seconds are
    /// asked about (janitor): a lost `refund.updated` must not hold the amount forever.
    /// Returns how many were settled.
    public func settleStalePending(age: Int64 = 3600, deadline: ContinuousClock.Instant) async -> Int {
        let stale: [(refundID: String, stripeRefundID: String, dealID: String)]
        do {
            stale = try await self.store.read { db in try RefundRecord.stalePending(db, touchedBefore: self.now() - age) }
        } catch {
            self.logger.sweepFailure(.error, "cannot list pending refunds", error: error)
            return 0
        }
        var settled = 0
        for refund in stale {
            do {
                let object = try await self.stripe.retrieveRefund(refund.stripeRefundID, deadline: deadline)
                try await self.locks.withDealLock(refund.dealID, deadline: deadline) {
                    try await self.store.write { db in
                        // Asked again after another `age` seconds if Stripe still says pending.
                        try RefundRecord.touch(db, refundID: refund.refundID, now: self.now())
                        try RefundLedger.settle(db, refundID: refund.refundID, .stripe(object), now: self.now())
                    }
                }
                if object.status?.isFinal == true { settled += 1 }
            } catch {
                self.logger.sweepFailure(
                    .warning, "asking Stripe about a pending refund failed",
                    error: error, metadata: ["refund_id": "\(refund.refundID)"])
            }
        }
        return settled
    }
}
