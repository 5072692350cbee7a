import Logging
import PaymentsStore

extension Logger {
    /// A failure of one step of a janitor sweep. The database going away is left out: the store
    /// reported it once, when it noticed, and every step of every sweep after would only repeat it.
    func sweepFailure(
        _ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, error: any Error,
        metadata: Logger.Metadata = [:]
    ) {
        if let trouble = error as? StorageTrouble, trouble.isPermanent { return }
        var metadata = metadata
        metadata["error"] = "\(error)"
        self.log(level: level, message(), metadata: metadata)
    }
}
