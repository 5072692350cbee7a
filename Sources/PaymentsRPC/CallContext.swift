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
    /// Set by the idempotency stage for a call it runs under the caller's key: the handler hands it
    /// on, so the call's answer is stored with its effect.
    public private(set) var idempotentCall: IdempotentCall?
    private let daemonLogger: Logger

    /// The daemon's logger with the call's request id and method. Built when a handler logs, not
    /// for every call: most calls log nothing, and the metadata costs a dictionary per call.
    public var logger: Logger { Self.logger(self.daemonLogger, method: self.method.rawValue, requestID: self.requestID) }

    /// `logger` with a call's request id and method as metadata.
    static func logger(_ logger: Logger, method: String, requestID: UInt64) -> Logger {
        var logger = logger
        logger[metadataKey: "request_id"] = "\(requestID)"
        logger[metadataKey: "method"] = "\(method)"
        return logger
    }

    public init(
        method: MethodName, requestID: UInt64, peer: PeerCredentials, deadline: ContinuousClock.Instant,
        idempotencyKey: String?, logger: Logger
    ) {
        self.method = method
        self.requestID = requestID
        self.peer = peer
        self.deadline = deadline
        self.idempotencyKey = idempotencyKey
        self.daemonLogger = logger
    }

    /// The same call, admitted by the idempotency stage as `call`.
    public func admitted(as call: IdempotentCall) -> CallContext {
        var context = self
        context.idempotentCall = call
        return context
    }
}

/// A call run under an idempotency key: whose, which key, and the hash of its method and payload.
public struct IdempotentCall: Sendable, Equatable {
    public let callerUID: UInt32
    public let key: String
    public let requestHash: [UInt8]

    public init(callerUID: UInt32, key: String, requestHash: [UInt8]) {
        self.callerUID = callerUID
        self.key = key
        self.requestHash = requestHash
    }
}
