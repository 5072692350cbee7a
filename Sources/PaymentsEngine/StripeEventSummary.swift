import Foundation

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

    private struct Envelope: Decodable {
        struct Payload: Decodable { let object: Object }
        struct Object: Decodable {
            let id: String?
            let object: String?
            let status: String?
            let payment_status: String?
            let payment_intent: String?
            let client_reference_id: String?
            let metadata: [String: String]?
        }
        let id: String
        let type: String
        let created: Int64?
        let data: Payload
    }

    /// Parses a verified webhook body; nil when it is not an event.
    public static func parse(_ payload: [UInt8]) -> StripeEventSummary? {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(payload)),
            !envelope.id.isEmpty, !envelope.type.isEmpty
        else { return nil }
        let object = envelope.data.object
        let isSession = object.object == "checkout.session"
        return StripeEventSummary(
            eventID: envelope.id, type: envelope.type, created: envelope.created ?? 0, objectID: object.id ?? "",
            dealID: object.metadata?["deal_id"] ?? (isSession ? object.client_reference_id : nil),
            paymentID: isSession ? object.metadata?["payment_id"] : nil,
            objectStatus: object.status, paymentStatus: object.payment_status, paymentIntentID: object.payment_intent)
    }
}
