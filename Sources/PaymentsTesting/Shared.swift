import Synchronization

/// A value behind a mutex that concurrent test tasks can capture.
///
/// `Mutex` itself is non-copyable, so escaping closures (task group children,
/// handlers) cannot capture it; a class around it can.
public final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) { self.mutex = Mutex(value) }

    @discardableResult
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try self.mutex.withLock { try body(&$0) }
    }

    public var value: Value { self.mutex.withLock { $0 } }
}
