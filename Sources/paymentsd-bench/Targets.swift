import Foundation
import Synchronization

/// Issue 13's targets, each a ratio measured in this run against its bound, printed at the end as
/// PASS or SHORT: the figures drift with this shared machine, the ratios much less.
final class Targets: Sendable {
    private struct Target: Sendable {
        let name: String
        let ratio: Double
        let bound: Double
        /// Whether the ratio must reach the bound (a rate) or stay under it (a time).
        let atLeast: Bool

        var passes: Bool { self.atLeast ? self.ratio >= self.bound : self.ratio <= self.bound }
    }

    private let targets = Mutex<[Target]>([])
    private let unmeasured = Mutex<[String]>([])

    func atLeast(_ name: String, _ ratio: Double, _ bound: Double) {
        self.targets.withLock { $0.append(Target(name: name, ratio: ratio, bound: bound, atLeast: true)) }
    }

    func atMost(_ name: String, _ ratio: Double, _ bound: Double) {
        self.targets.withLock { $0.append(Target(name: name, ratio: ratio, bound: bound, atLeast: false)) }
    }

    /// A target this bench does not measure yet, listed so that nobody reads its absence as a pass.
    func notMeasured(_ name: String) { self.unmeasured.withLock { $0.append(name) } }

    func printSummary() {
        let targets = self.targets.withLock { $0 }
        let unmeasured = self.unmeasured.withLock { $0 }
        print("\n## Targets (issue 13), ratios of this run")
        let line = { (cells: [String]) in
            print(([cells[0].padding(toLength: 56, withPad: " ", startingAt: 0)] + cells.dropFirst()).joined(separator: " | "))
        }
        line(["target", "ratio", "bound", "result"])
        for target in targets {
            line([
                target.name, fixed(target.ratio, 2), (target.atLeast ? ">= " : "<= ") + fixed(target.bound, 2),
                target.passes ? "PASS" : "SHORT",
            ])
        }
        for name in unmeasured { line([name, "", "", "not measured"]) }
    }
}
