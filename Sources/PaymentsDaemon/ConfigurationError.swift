/// A setting that stops start-up: exit 78 (EX_CONFIG) with one line naming it.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The environment variable (or option) at fault.
    public let variable: String
    /// What is wrong; never the value of a secret.
    public let problem: String

    public init(_ variable: String, _ problem: String) {
        self.variable = variable
        self.problem = problem
    }

    public var description: String { "configuration error: \(self.variable): \(self.problem)" }
}
