import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// A RefundPayment request, checked.
    struct RefundCall: Sendable {
        let payment: CheckoutEngine.PaymentKey
        let wire: RefundRequest
    }

    static func validateRefund(_ wire: RefundRequest) throws -> RefundCall {
        let payment = try Self.paymentKey(PaymentRef(dealID: wire.dealID, paymentID: wire.paymentID))
        guard wire.amount >= 0 else {
            throw PaymentsError.invalidField(field: "amount", message: "amount must be positive, or 0 for all that remains")
        }
        return RefundCall(payment: payment, wire: wire)
    }

    /// `RefundPayment` (admin): always under an idempotency key (the dispatcher refuses a call
    /// without one), so that a retry resumes the refund it asked for instead of making a second one.
    func refundPayment(_ call: RefundCall, _ context: CallContext) async throws -> Refund {
        guard let idempotent = context.idempotentCall else {
            preconditionFailure("RefundPayment runs only under an idempotency key")
        }
        let wire = call.wire
        let result = try await self.checkout.refunds.refund(
            RefundEngine.Request(
                payment: call.payment, amount: wire.amount, reason: wire.reason.domain, restock: wire.restock,
                callerUID: idempotent.callerUID, idempotencyKey: idempotent.key, requestHash: idempotent.requestHash),
            answer: RequestIdempotency.Recorder(idempotent).answer { Self.refundReply($0).serialized() },
            deadline: context.deadline)
        return Self.refundReply(result)
    }

    private static func refundReply(_ result: RefundEngine.Result) -> Refund {
        var reply = Refund(result.refund)
        reply.payment = Payment(result.payment)
        return reply
    }
}
