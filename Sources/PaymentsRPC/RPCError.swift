import PaymentsWire

/// The error of one call: a status code, a stable reason and a message for humans.
///
/// Handlers throw `RPCError` for answers the protocol names (protocol.md
/// section 4, "Reasons that callers rely on"); domain errors conform to
/// `RPCErrorConvertible` instead. The dispatcher turns both into the
/// response's `Status` at one place, and anything else into `INTERNAL`.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: StatusCode
    public var reason: String
    public var message: String
    public var details: [Header]

    public init(_ code: StatusCode, _ reason: String, _ message: String, details: [Header] = []) {
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
    }

    public var status: Status { Status(code: self.code, reason: self.reason, message: self.message, details: self.details) }

    public var description: String { "\(self.code) \(self.reason): \(self.message)" }

    /// `INVALID_ARGUMENT invalid_field`, naming the field in the details.
    public static func invalidField(_ field: String, _ message: String) -> RPCError {
        RPCError(.invalidArgument, "invalid_field", message, details: [Header("field", field)])
    }

    public static let callerNotAllowed = RPCError(
        .permissionDenied, "caller_not_allowed", "this caller may not call this method")

    public static let deadlineExceeded = RPCError(
        .deadlineExceeded, "deadline_exceeded", "the call did not finish before its deadline")

    public static let malformedPayload = RPCError(
        .invalidArgument, "malformed_payload", "the payload is not an encoding of the method's request message")
}

/// An error of the domain that knows the status it answers with.
public protocol RPCErrorConvertible: Error {
    var rpcError: RPCError { get }
}
