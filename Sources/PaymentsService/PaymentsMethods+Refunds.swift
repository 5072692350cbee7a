import PaymentsEngine
import PaymentsRPC
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
            let (refund, after) = try await self.checkout.refunds.refund(
                RefundEngine.Request(
                    payment: payment, amount: wire.amount, reason: wire.reason, restock: wire.restock,
                    callerUID: recorder.callerUID, idempotencyKey: recorder.key, requestHash: recorder.hash),
                deadline: context.deadline)
            var reply = Refund(refund)
            reply.payment = Payment(after)
            return reply.serialized()
        }
    }
}

extension Refund {
    /// A refund as the wire shows it; `payment` is left for the caller to set.
    init(_ record: RefundRecord) {
        self.init(
            refundID: record.refundID, paymentID: record.paymentID, amount: record.amount, status: record.status,
            stripeRefundID: record.stripeRefundID ?? "", reason: record.reason, failureReason: record.failureReason ?? "",
            createdAt: record.createdAt)
    }
}
