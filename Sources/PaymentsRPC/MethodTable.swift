import PaymentsWire

/// The handlers of the methods this build serves, by name.
///
/// A method of the service without a handler answers
/// `UNIMPLEMENTED not_implemented`; a name outside the service answers
/// `UNIMPLEMENTED unknown_method`.
public struct MethodTable: Sendable {
    /// Runs a call whose payload was decoded and validated.
    public typealias Invocation = @Sendable (CallContext) async throws -> [UInt8]
    /// Decodes and validates a payload, once, and returns the call to run
    /// (undecodable: `INVALID_ARGUMENT malformed_payload`; a field out of its domain: `invalid_field`).
    public typealias Handler = @Sendable (_ payload: [UInt8]) throws -> Invocation

    private(set) var handlers: [MethodName: Handler] = [:]

    public init() {}

    /// Registers the handler of `method`: its payload is decoded as `Request` and checked by
    /// `validate` before any stage runs, then `handler` gets what `validate` made of it.
    public mutating func register<Request: WireMessage, Validated: Sendable, Response: WireMessage>(
        _ method: MethodName, _: Request.Type, validate: @escaping @Sendable (Request) throws -> Validated,
        _ handler: @escaping @Sendable (Validated, CallContext) async throws -> Response
    ) {
        precondition(self.handlers[method] == nil, "\(method) registered twice")
        self.handlers[method] = { payload in
            let request: Request
            do { request = try Request(serialized: payload) } catch { throw RPCError.malformedPayload }
            let validated = try validate(request)
            return { context in try await handler(validated, context).serialized() }
        }
    }

    /// Registers the handler of `method` for a request that needs no validation of its own.
    public mutating func register<Request: WireMessage, Response: WireMessage>(
        _ method: MethodName, _ type: Request.Type,
        _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        self.register(method, type, validate: { $0 }, handler)
    }

    public func handler(for method: MethodName) -> Handler? { self.handlers[method] }
}
