import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Named places between the steps of operations where a test may end the
/// process at once (`PAYMENTSD_CRASH_AT=NAME`), as a power cut would.
///
/// Inert unless armed. `paymentsd crash-points` lists `all`.
public enum CrashPoints {
    /// Every crash point of this build, in the order an operation reaches them.
    public static let all: [String] = [
        "create_checkout.payment_recorded",
        "create_checkout.session_created",
        "create_checkout.session_recorded",
        "create_checkout.rejected_by_stripe",
        "create_checkout.replaced_session_expired",
        "create_checkout.customer_session_replaced",
        "stripe_event.stored",
        "confirm_checkout.session_retrieved",
        "stripe_catch_up.page_fetched",
        "stripe_catch_up.page_applied",
        "cancel_checkout.session_expired",
        "cancel_checkout.checkout_closed",
        "janitor.session_expired",
        "refund_payment.refund_recorded",
        "refund_payment.stripe_answered",
        "refund_payment.result_recorded",
        "set_stock.committed",
        "adjust_stock.committed",
    ]

    private static let armed = Mutex<String?>(nil)

    public static func arm(_ name: String?) {
        Self.armed.withLock { $0 = name }
    }

    /// Ends the process with status 137 (as SIGKILL would) if `name` is armed; no clean-up runs.
    public static func reach(_ name: String) {
        precondition(Self.all.contains(name), "unknown crash point \(name)")
        if Self.armed.withLock({ $0 }) == name {
            let line = "<2>crash point reached: \(name)\n"
            line.withCString { _ = write(2, $0, strlen($0)) }
            _exit(137)
        }
    }
}
