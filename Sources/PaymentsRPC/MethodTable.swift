import PaymentsWire

/// The handlers of the methods this build serves, by name.
///
/// A method of the service without a handler answers
/// `UNIMPLEMENTED not_implemented`; a name outside the service answers
/// `UNIMPLEMENTED unknown_method`.
public struct MethodTable: Sendable {
    /// Decodes the payload, runs the method and encodes its response.
    public typealias Handler = @Sendable (_ payload: [UInt8], _ context: CallContext) async throws -> [UInt8]

    private(set) var handlers: [MethodName: Handler] = [:]

    public init() {}

    /// Registers the handler of `method`: its payload is decoded as `Request`
    /// (undecodable: `INVALID_ARGUMENT malformed_payload`), its result encoded.
    public mutating func register<Request: WireMessage, Response: WireMessage>(
        _ method: MethodName, _: Request.Type,
        _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response
    ) {
        precondition(self.handlers[method] == nil, "\(method) registered twice")
        self.handlers[method] = { payload, context in
            let request: Request
            do { request = try Request(serialized: payload) } catch { throw RPCError.malformedPayload }
            return try await handler(request, context).serialized()
        }
    }

    /// Registers a handler that decodes its payload itself (it needs the bytes as sent).
    public mutating func register(_ method: MethodName, _ handler: @escaping Handler) {
        precondition(self.handlers[method] == nil, "\(method) registered twice")
        self.handlers[method] = handler
    }

    public func handler(for method: MethodName) -> Handler? { self.handlers[method] }
}
