import Foundation

/// `paymentsd-fuzz`: the decoders under libFuzzer (`make fuzz`), or the committed corpus replayed
/// (`make test`). `FUZZ_TARGET` names the target (`FuzzTarget`).
///
/// Built with `-sanitize=fuzzer,address -D FUZZING`, it is a libFuzzer binary: libFuzzer's own
/// flags (`-max_total_time=`, `-runs=`, corpus directories). Built normally, it runs every file
/// of the directories it is given through the target once, so a find kept in the corpus stays a
/// test in the ordinary suite.
@main
struct FuzzMain {
    static func main() {
        guard let name = ProcessInfo.processInfo.environment["FUZZ_TARGET"], let target = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(
                Data("FUZZ_TARGET must be one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
            exit(64)
        }
        Self.target = target
        _ = Fixture.shared
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, { data, size in
            FuzzMain.target.run(Array(UnsafeBufferPointer(start: data, count: size)))
            return 0
        }))
        #else
        var replayed = 0
        for directory in CommandLine.arguments.dropFirst() {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            for file in files.sorted() {
                guard let bytes = FileManager.default.contents(atPath: "\(directory)/\(file)") else { continue }
                target.run(Array(bytes))
                replayed += 1
            }
        }
        print("\(target.rawValue): \(replayed) inputs replayed")
        #endif
    }

    /// Set once, before the fuzzer starts, from `FUZZ_TARGET`.
    nonisolated(unsafe) static var target = FuzzTarget.frames
}

#if FUZZING
typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

/// libFuzzer's driver, for a binary whose `main` is Swift's (SwiftPM names the executable's entry
/// point itself, so libFuzzer's `main` cannot be the one that runs).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: FuzzCallback
) -> Int32

/// libFuzzer's own `main`, linked from its archive, calls this.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzMain.target.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#endif
