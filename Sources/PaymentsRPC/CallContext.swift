import Logging
import PaymentsWire

/// What a handler knows about the call it serves.
public struct CallContext: Sendable {
    public let method: MethodName
    public let requestID: UInt64
    public let peer: PeerCredentials
    /// The call's deadline; waits (locks, Stripe) must end by then.
    public let deadline: ContinuousClock.Instant
    /// Nil when the caller sent none.
    public let idempotencyKey: String?
    public let logger: Logger

    public init(
        method: MethodName, requestID: UInt64, peer: PeerCredentials, deadline: ContinuousClock.Instant,
        idempotencyKey: String?, logger: Logger
    ) {
        self.method = method
        self.requestID = requestID
        self.peer = peer
        self.deadline = deadline
        self.idempotencyKey = idempotencyKey
        self.logger = logger
    }
}
