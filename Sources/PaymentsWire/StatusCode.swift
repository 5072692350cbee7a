import PaymentsProtoC

/// gRPC's canonical status codes, with gRPC's numbers (protocol.md section 2).
public enum StatusCode: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// Success.
    case ok = 0
    /// The caller cancelled the call.
    case cancelled = 1
    /// An error whose kind is not known; prefer a more specific code.
    case unknown = 2
    /// The request is malformed whatever the state of the system (bad field, bad frame).
    case invalidArgument = 3
    /// The deadline passed before the call finished, including waits for a lock.
    case deadlineExceeded = 4
    /// A named deal, payment, sku or claim does not exist.
    case notFound = 5
    /// What the call would create exists already (an open checkout, a taken claim).
    case alreadyExists = 6
    /// The caller may not call this method.
    case permissionDenied = 7
    /// A limit was hit (frame size).
    case resourceExhausted = 8
    /// The request is well formed but the state forbids it (refund of an unpaid payment).
    case failedPrecondition = 9
    /// A concurrency conflict; retrying the whole sequence may succeed.
    case aborted = 10
    /// A value is past a bound that depends on state (refund above what remains).
    case outOfRange = 11
    /// The method does not exist or is not served by this version.
    case unimplemented = 12
    /// A bug or broken invariant in the daemon; details are in its log, not here.
    case `internal` = 13
    /// A dependency (Stripe) could not be reached; retry with the same idempotency key.
    case unavailable = 14
    /// Unrecoverable loss or corruption of data.
    case dataLoss = 15
    /// The request's credentials (a webhook signature) are not valid.
    case unauthenticated = 16

    /// Maps numbers from a newer peer that this build does not know to `.unknown`.
    public init(wireValue: Int) {
        self = StatusCode(rawValue: wireValue) ?? .unknown
    }

    /// The protobuf name, as in `Code` of payments.proto ("NOT_FOUND").
    public var description: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        }
    }

    var cValue: Payments__V1__Code { Payments__V1__Code(rawValue: UInt32(self.rawValue)) }
}
