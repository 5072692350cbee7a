import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `CreateCheckout`: idempotent by deal, and by key when one is sent.
    func createCheckout(_ request: CheckoutRequest, _ context: CallContext) async throws -> Payment {
        // The engine stores this answer only from the call that opens the checkout.
        let answer = context.recorder?.answer { (opened: PaymentRecord) in
            var reply = Payment(opened)
            reply.created = true
            return reply.serialized()
        }
        let (payment, created) = try await self.checkout.createCheckout(request, answer: answer, deadline: context.deadline)
        var reply = Payment(payment)
        reply.created = created
        return reply
    }

    /// `GetPayment`: the deal's latest payment, or the one named.
    func getPayment(_ ref: PaymentRef) async throws -> Payment {
        Payment(try await self.checkout.find(try Self.paymentKey(ref)))
    }

    /// `ListPayments`: the deal's history, oldest first.
    func listPayments(_ ref: PaymentRef) async throws -> PaymentList {
        let dealID = try Self.dealOnly(ref)
        let payments = try await self.store.read { try PaymentRecord.all($0, dealID: dealID) }
        guard !payments.isEmpty else { throw PaymentsError.dealNotFound(dealID) }
        return PaymentList(payments: payments.map(Payment.init))
    }

    /// `ListEvents`: the deal's audit trail.
    func listEvents(_ ref: PaymentRef) async throws -> EventList {
        let dealID = try Self.dealOnly(ref)
        let entries = try await self.store.read { try AuditLog.entries($0, dealID: dealID) }
        guard !entries.isEmpty else { throw PaymentsError.dealNotFound(dealID) }
        return EventList(
            events: entries.map {
                AuditEvent(
                    seq: UInt64($0.seq), at: $0.at, paymentID: $0.paymentID, kind: $0.kind, fromStatus: $0.fromStatus,
                    toStatus: $0.toStatus, detail: $0.detail)
            })
    }

    static func paymentKey(_ ref: PaymentRef) throws -> CheckoutEngine.PaymentKey {
        switch (ref.dealID.isEmpty, ref.paymentID.isEmpty) {
        case (false, true):
            try Field.identifier(ref.dealID, "deal_id")
            return .deal(ref.dealID)
        case (true, false):
            try Field.identifier(ref.paymentID, "payment_id")
            return .payment(ref.paymentID)
        case (true, true), (false, false):
            throw PaymentsError.invalidField(field: "deal_id", message: "give exactly one of deal_id and payment_id")
        }
    }

    private static func dealOnly(_ ref: PaymentRef) throws -> String {
        try Field.identifier(ref.dealID, "deal_id")
        return ref.dealID
    }
}
