import Foundation
import Testing

@testable import StripeClient

/// The typed requests encode as Stripe's nested form, key for key and in order: a step resumed
/// after an upgrade must send what its first attempt sent under the same idempotency key.
@Suite struct StripeRequestFormTests {
    @Test func aPaymentSession_encodesItsItemsInline_andItsIdsOnThePaymentIntent() {
        let request = CheckoutSessionRequest(
            mode: .payment, currency: "usd", clientReferenceID: "d1", successURL: "https://s", cancelURL: "https://c",
            expiresAt: 1_900_000_000,
            lineItems: [.init(quantity: 2, price: .inline(unitAmount: 1500, productName: "Tee", sku: "tee"))],
            metadata: [(key: "order", value: "7"), (key: "deal_id", value: "d1"), (key: "payment_id", value: "pay_1")],
            ownerMetadata: [(key: "deal_id", value: "d1"), (key: "payment_id", value: "pay_1")])
        #expect(
            request.form.pairs.map { "\($0.key)=\($0.value)" } == [
                "mode=payment", "client_reference_id=d1", "success_url=https://s", "cancel_url=https://c",
                "expires_at=1900000000", "line_items[0][quantity]=2", "line_items[0][price_data][currency]=usd",
                "line_items[0][price_data][unit_amount]=1500", "line_items[0][price_data][product_data][name]=Tee",
                "line_items[0][price_data][product_data][metadata][sku]=tee", "metadata[order]=7", "metadata[deal_id]=d1",
                "metadata[payment_id]=pay_1", "payment_intent_data[metadata][deal_id]=d1",
                "payment_intent_data[metadata][payment_id]=pay_1",
            ])
    }

    @Test func aSubscriptionSession_namesStripePrices_andPutsItsIdsOnTheSubscription() {
        let request = CheckoutSessionRequest(
            mode: .subscription, currency: "usd", clientReferenceID: "d2", successURL: "https://s",
            cancelURL: "https://c", expiresAt: 1, lineItems: [.init(quantity: 1, price: .stripe(id: "price_1"))],
            metadata: [], ownerMetadata: [(key: "payment_id", value: "pay_2")])
        let keys = request.form.pairs.map(\.key)
        #expect(keys.contains("line_items[0][price]"))
        #expect(!keys.contains { $0.contains("price_data") })
        #expect(keys.last == "subscription_data[metadata][payment_id]")
    }

    @Test func aRefund_givesItsReasonOnlyWhenThereIsOne() {
        let plain = RefundRequest(paymentIntent: "pi_1", amount: 5, reason: nil, metadata: [(key: "refund_id", value: "r")])
        #expect(plain.form.pairs.map(\.key) == ["payment_intent", "amount", "metadata[refund_id]"])
        let fraud = RefundRequest(paymentIntent: "pi_1", amount: 5, reason: .fraudulent, metadata: [])
        #expect(fraud.form.pairs.map { "\($0.key)=\($0.value)" } == ["payment_intent=pi_1", "amount=5", "reason=fraudulent"])
    }

    @Test func aSessionWithAStatusThisClientDoesNotKnow_isNotDecoded() throws {
        let known = #"{"id": "cs_1", "status": "complete", "payment_status": "no_payment_required"}"#
        let session = try JSONDecoder().decode(CheckoutSession.self, from: Data(known.utf8))
        #expect(session.status == .complete && session.paymentStatus == .noPaymentRequired)
        let unknown = #"{"id": "cs_1", "status": "archived", "payment_status": "paid"}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(CheckoutSession.self, from: Data(unknown.utf8)) }
    }
}
