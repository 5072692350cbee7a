import PaymentsProtoC

/// `payments.v1.Status`: the outcome of a call.
public struct Status: Sendable, Equatable, Error {
    public var code: StatusCode
    /// Stable snake_case a program can match, e.g. "payment_not_paid"; empty for OK.
    public var reason: String
    /// For humans; never holds secrets or personal data.
    public var message: String
    public var details: [Header]

    public init(code: StatusCode, reason: String = "", message: String = "", details: [Header] = []) {
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
    }

    public static let ok = Status(code: .ok)

    /// The value of the first detail named `key`.
    public func detail(_ key: String) -> String? {
        self.details.first { $0.key == key }?.value
    }

    init(_ c: Payments__V1__Status) {
        self.init(
            code: StatusCode(wireValue: Int(c.code.rawValue)), reason: swiftString(c.reason),
            message: swiftString(c.message), details: repeated(c.n_details, c.details, Header.init))
    }

    func cStatus(in arena: CArena) -> UnsafeMutablePointer<Payments__V1__Status> {
        let c = arena.allocate(Payments__V1__Status.self)!
        payments__v1__status__init(c)
        c.pointee.code = self.code.cValue
        c.pointee.reason = arena.cString(self.reason)
        c.pointee.message = arena.cString(self.message)
        c.pointee.n_details = self.details.count
        c.pointee.details = Header.cArray(self.details, in: arena)
        return c
    }
}
