/// What one step of an operation leads to: the next step, or the operation's result.
enum StepOutcome<Step: Sendable, Result: Sendable>: Sendable {
    /// Go on with `step`; `crashPoint` names the place between the two steps (behaviour.md,
    /// "How a command runs"), nil where the next step is the same transaction's read.
    case next(Step, crashPoint: String?)
    case finished(Result)
}

/// An operation as data: its steps are the cases of `Step`, in the order they run, and `perform`
/// runs exactly one of them, either one store transaction or one Stripe call, never both. The
/// progress that must survive a crash is committed by the transaction steps (the operation's
/// recovery point); a step that carries a Stripe answer only in memory is redone from the last
/// recovery point, with the same idempotency key, after a crash.
protocol OperationSteps: Sendable {
    associatedtype Step: Sendable
    associatedtype Result: Sendable

    func perform(_ step: Step) async throws -> StepOutcome<Step, Result>
}

/// The one loop that drives every operation, for a live call and the janitor's resume alike.
enum OperationRunner {
    static func run<Operation: OperationSteps>(_ operation: Operation, from first: Operation.Step) async throws
        -> Operation.Result
    {
        var step = first
        while true {
            switch try await operation.perform(step) {
            case .next(let next, let crashPoint):
                if let crashPoint { CrashPoints.reach(crashPoint) }
                step = next
            case .finished(let result):
                return result
            }
        }
    }
}
