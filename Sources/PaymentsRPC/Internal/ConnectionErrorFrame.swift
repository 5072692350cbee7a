import PaymentsWire

extension Frame {
    /// A connection-level answer (protocol.md section 3): `request_id` 0 and `status`, framed.
    static func connectionError(_ status: Status) -> [UInt8] {
        Frame.encode(ResponseEnvelope(requestID: 0, status: status).serialized())
    }
}
