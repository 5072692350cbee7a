import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `HandleStripeEvent`: verify before parsing, store before answering, apply under the deal's lock.
    func handleStripeEvent(_ delivery: StripeEvent, _ context: CallContext) async throws -> EventResult {
        do {
            try self.verifier.verify(payload: delivery.payload, header: delivery.signature, now: self.now())
        } catch .badSignature {
            throw PaymentsError.badSignature
        } catch .timestampOutsideTolerance {
            throw PaymentsError.timestampOutsideTolerance
        }
        guard let event = StripeEventSummary.parse(delivery.payload) else {
            throw PaymentsError.invalidField(field: "payload", message: "the signed body is not a Stripe event")
        }
        let outcome = try await self.events.receive(event, deadline: context.deadline)
        let wire: EventOutcome
        switch outcome {
        case .applied: wire = .applied
        case .duplicate: wire = .duplicate
        case .ignored: wire = .ignored
        case .queued: wire = .queued
        }
        return EventResult(eventID: event.eventID, type: event.type, outcome: wire)
    }

    /// `ConfirmCheckout`: ask Stripe now and apply what it says.
    func confirmCheckout(_ ref: PaymentRef, _ context: CallContext) async throws -> Payment {
        Payment(try await self.checkout.confirmCheckout(try Self.paymentKey(ref), deadline: context.deadline))
    }

    /// `CancelCheckout`: expire at Stripe first, then release.
    func cancelCheckout(_ request: CancelRequest, _ context: CallContext) async throws -> Payment {
        Payment(
            try await self.checkout.cancelCheckout(
                dealID: request.dealID, reason: request.reason,
                answer: context.recorder?.answer { Payment($0).serialized() }, deadline: context.deadline))
    }

    static func validateCancel(_ request: CancelRequest) throws -> CancelRequest {
        try Field.identifier(request.dealID, "deal_id")
        try Field.check(
            request.reason.unicodeScalars.count <= 200 && Field.isPrintable(request.reason), "reason",
            "reason is at most 200 printable characters")
        return request
    }
}
