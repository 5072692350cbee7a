import Logging
import PaymentsStore
import StripeClient

#if canImport(Glibc)
import Glibc
#endif

/// The one place the engine is wired: its parts share one store, one Stripe client, one clock and
/// one keyed lock table.
///
/// Per-deal serialisation (guarantee 1) holds only if every part locks deals in the same table;
/// the parts' initialisers are internal, so the daemon, the benchmark and the tests all build
/// them here and cannot hand two parts two tables.
public struct Engine: Sendable {
    public let store: Store
    public let stripe: StripeClient
    /// The deal and customer locks, and the locks of request idempotency keys.
    public let locks: KeyedLockTable<String>
    public let checkout: CheckoutEngine
    public let events: EventInbox
    public let janitor: Janitor
    public let catchUp: EventCatchUp

    public var refunds: RefundEngine { self.checkout.refunds }

    /// - Parameter now: the clock of every part (Unix seconds); tests inject their own.
    public init(
        store: Store, stripe: StripeClient, configuration: CheckoutEngine.Configuration = .init(), logger: Logger,
        now: @escaping @Sendable () -> Int64 = { Int64(time(nil)) }
    ) {
        let locks = KeyedLockTable<String>(crossHost: store.advisoryLocks)
        let checkout = CheckoutEngine(
            store: store, stripe: stripe, locks: locks, configuration: configuration, logger: logger, now: now)
        let events = EventInbox(store: store, checkout: checkout, locks: locks, logger: logger, now: now)
        self.store = store
        self.stripe = stripe
        self.locks = locks
        self.checkout = checkout
        self.events = events
        let catchUp = EventCatchUp(
            store: store, stripe: stripe, inbox: events, lookback: configuration.eventsLookback, logger: logger, now: now)
        self.catchUp = catchUp
        self.janitor = Janitor(checkout: checkout, events: events, catchUp: catchUp, logger: logger)
    }
}
