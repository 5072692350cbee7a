import Foundation
import StripeClient

/// The fields of a Stripe event that paymentsd acts on, and no others.
///
/// Parsing keeps ids, types and statuses; the object's personal data
/// (`customer_details`, addresses, e-mails) is skipped by the decoder and
/// never reaches the store or a log.
public struct StripeEventSummary: Sendable, Equatable {
    public let eventID: String
    public let type: String
    public let created: Int64
    /// The event's object: a checkout session, charge or refund id.
    public let objectID: String
    public let dealID: String?
    public let paymentID: String?
    public let objectStatus: String?
    public let paymentStatus: String?
    public let paymentIntentID: String?
    /// A session's subscription, or the subscription itself (`customer.subscription.*`).
    public let subscriptionID: String?
    /// A session's `amount_total`: what Stripe charges (for a subscription, its prices').
    public let amountTotal: Int64?
    /// The refunds the event names: its object for `refund.*`, the charge's list for `charge.refunded`.
    public let refunds: [RefundObject]

    private struct Envelope: Decodable {
        struct Payload: Decodable {
            let object: Object
            let refund: RefundObject?

            private enum CodingKeys: String, CodingKey { case object }

            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                self.object = try container.decode(Object.self, forKey: .object)
                self.refund = self.object.object == "refund" ? try? container.decode(RefundObject.self, forKey: .object) : nil
            }
        }
        struct RefundList: Decodable { let data: [RefundObject]? }
        struct Object: Decodable {
            let id: String?
            let object: String?
            let status: String?
            let payment_status: String?
            let payment_intent: String?
            let subscription: String?
            let amount_total: Int64?
            let client_reference_id: String?
            let metadata: [String: String]?
            /// A charge's refunds (`charge.refunded`), when Stripe includes them.
            let refunds: RefundList?
        }
        let id: String
        let type: String
        let created: Int64?
        let data: Payload
    }

    /// Parses a verified webhook body; nil when it is not an event.
    public static func parse(_ payload: [UInt8]) -> StripeEventSummary? {
        try? JSONDecoder().decode(StripeEventSummary.self, from: Data(payload))
    }
}

extension StripeEventSummary: Decodable {
    /// Decodes one event, of a webhook body or of an Events API page.
    public init(from decoder: any Decoder) throws {
        let envelope = try Envelope(from: decoder)
        guard !envelope.id.isEmpty, !envelope.type.isEmpty else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an event"))
        }
        let object = envelope.data.object
        let isSession = object.object == "checkout.session"
        let isSubscription = object.object == "subscription"
        self.init(
            eventID: envelope.id, type: envelope.type, created: envelope.created ?? 0, objectID: object.id ?? "",
            dealID: object.metadata?["deal_id"] ?? (isSession ? object.client_reference_id : nil),
            paymentID: isSession || isSubscription || object.object == "refund" ? object.metadata?["payment_id"] : nil,
            objectStatus: object.status, paymentStatus: object.payment_status, paymentIntentID: object.payment_intent,
            subscriptionID: isSubscription ? object.id : object.subscription,
            amountTotal: isSession ? object.amount_total : nil,
            refunds: envelope.data.refund.map { [$0] } ?? (object.object == "charge" ? object.refunds?.data ?? [] : []))
    }
}
