import PaymentsDomain
import PaymentsStore
import StripeClient

extension CheckoutEngine {
    /// Names a payment: the deal's latest, or one by id.
    public enum PaymentKey: Sendable {
        case deal(String)
        case payment(String)
    }

    /// `ConfirmCheckout`: asks Stripe for the session now and applies what it says through the
    /// same paths as the webhook (the synchronous twin; both run under the deal's lock).
    public func confirmCheckout(_ key: PaymentKey, deadline: ContinuousClock.Instant) async throws -> PaymentRecord {
        let payment = try await self.find(key)
        return try await self.withDealLock(payment.dealID, deadline: deadline) {
            guard let current = try await self.store.read({ try PaymentRecord.load($0, paymentID: payment.paymentID) }),
                current.status == .created
            else { return try await self.reload(payment.paymentID) }
            guard let sessionID = current.checkoutSessionID else {
                return try await self.createSession(paymentID: current.paymentID, deadline: deadline)
            }
            let session: CheckoutSession
            do {
                session = try await self.stripe.retrieveCheckoutSession(sessionID, deadline: deadline)
            } catch StripeError.rejected(_, _, let code, let message) {
                throw PaymentsError.stripeRejected(code: code, message: message)
            } catch {
                throw PaymentsError.stripeUnavailable
            }
            CrashPoints.reach("confirm_checkout.session_retrieved")
            try await self.store.write { db in
                let now = self.now()
                guard let open = try PaymentRecord.load(db, paymentID: current.paymentID), open.status == .created else {
                    return
                }
                switch (session.status, session.paymentStatus) {
                case (.complete, .paid), (.complete, .noPaymentRequired):
                    // Nothing to pay (a 100%-off code, a trial) is as final as paid.
                    try Fulfilment.apply(db, open, paid: .init(session), source: "confirm", now: now)
                case (.expired, _):
                    // Stripe confirms the expiry: only now is the stock let go (guarantee 5).
                    try PaymentRecord.transition(db, open, to: .expired, kind: "checkout.expired", detail: "source=confirm", now: now)
                    try CheckoutHolds.release(db, paymentID: open.paymentID, now: now)
                case (.open, _), (.complete, .unpaid):
                    // Open, or complete with an asynchronous payment still settling.
                    break
                }
            }
            return try await self.reload(current.paymentID)
        }
    }

    /// `CancelCheckout`: only an open checkout. Its session is expired at Stripe first; if Stripe
    /// says the customer already paid, the payment is fulfilled and the caller told `already_paid`.
    ///
    /// `reason` is the caller's text for the audit trail; the checkout ends CANCELED whatever it says.
    /// `answer` is stored in the transaction that closes the checkout (or fulfils it).
    public func cancelCheckout(
        dealID: String, reason: String, answer: AnswerRecorder<PaymentRecord>? = nil, deadline: ContinuousClock.Instant
    ) async throws -> PaymentRecord {
        try await self.withDealLock(dealID, deadline: deadline) {
            let payments = try await self.store.read { try PaymentRecord.all($0, dealID: dealID) }
            guard var open = PaymentCommand.deciding(payments) else { throw PaymentsError.dealNotFound(dealID) }
            if let refusal = PaymentCommand.cancelCheckout.refusal(open) { throw refusal }
            if open.checkoutSessionID == nil {
                // Finish creating it first, so no session can appear at Stripe after the cancel.
                open = try await self.createSession(paymentID: open.paymentID, deadline: deadline)
            }
            try await self.startExpiry(of: open, cause: .canceled, reason: reason.isEmpty ? nil : reason)
            try await self.expireSession(paymentID: open.paymentID, cause: .canceled, answer: answer, deadline: deadline)
            return try await self.reload(open.paymentID)
        }
    }

    public func find(_ key: PaymentKey) async throws -> PaymentRecord {
        try await self.store.read { db in
            switch key {
            case .deal(let dealID):
                guard let payment = try PaymentRecord.latest(db, dealID: dealID) else { throw PaymentsError.dealNotFound(dealID) }
                return payment
            case .payment(let paymentID):
                guard let payment = try PaymentRecord.load(db, paymentID: paymentID) else {
                    throw PaymentsError.paymentNotFound(paymentID)
                }
                return payment
            }
        }
    }

    private func reload(_ paymentID: String) async throws -> PaymentRecord {
        try await self.store.read { try PaymentRecord.load($0, paymentID: paymentID)! }
    }
}

extension CheckoutEngine {
    /// Expires a checkout past its time: at Stripe first, then EXPIRED and released. A session
    /// Stripe says is paid is fulfilled instead. Returns whether the checkout was expired.
    func expireOverdue(paymentID: String, deadline: ContinuousClock.Instant) async throws -> Bool {
        guard let payment = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }) else {
            return false
        }
        return try await self.withDealLock(payment.dealID, deadline: deadline) {
            guard let current = try await self.store.read({ try PaymentRecord.load($0, paymentID: paymentID) }),
                current.status == .created
            else { return false }
            if current.checkoutSessionID == nil {
                // Its creation never finished: finish it, so the session can be expired for sure.
                _ = try await self.createSession(paymentID: paymentID, deadline: deadline)
            }
            try await self.startExpiry(of: current, cause: .expiredByTime)
            do {
                try await self.expireSession(paymentID: paymentID, cause: .expiredByTime, deadline: deadline)
            } catch PaymentsError.alreadyPaid, PaymentsError.checkoutInProgress {
                return false  // paid (now fulfilled), or an asynchronous payment still settling
            }
            return try await self.store.read { try PaymentRecord.load($0, paymentID: paymentID)?.status == .expired }
        }
    }
}
