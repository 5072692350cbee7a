import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `RefundPayment` (admin): always under an idempotency key, so that a retry resumes the
    /// refund it asked for instead of making a second one.
    func refundPayment(_ payload: [UInt8], _ context: CallContext) async throws -> [UInt8] {
        guard context.idempotencyKey != nil else {
            throw RPCError(
                .invalidArgument, "idempotency_key_required",
                "RefundPayment needs an idempotency key, so that a retry cannot refund twice")
        }
        let wire: RefundRequest
        do { wire = try RefundRequest(serialized: payload) } catch { throw RPCError.malformedPayload }
        let payment = try Self.paymentKey(PaymentRef(dealID: wire.dealID, paymentID: wire.paymentID))
        guard wire.amount >= 0 else {
            throw PaymentsError.invalidField(field: "amount", message: "amount must be positive, or 0 for all that remains")
        }
        return try await self.idempotency.run(payload, context) { recorder in
            guard let recorder else { preconditionFailure("a call with an idempotency key has a recorder") }
            let result = try await self.checkout.refunds.refund(
                RefundEngine.Request(
                    payment: payment, amount: wire.amount, reason: wire.reason.domain, restock: wire.restock,
                    callerUID: recorder.callerUID, idempotencyKey: recorder.key, requestHash: recorder.hash),
                answer: recorder.answer(Self.refundReply), deadline: context.deadline)
            return Self.refundReply(result)
        }
    }

    @Sendable private static func refundReply(_ result: RefundEngine.Result) -> [UInt8] {
        var reply = Refund(result.refund)
        reply.payment = Payment(result.payment)
        return reply.serialized()
    }
}
