import Logging
import PaymentsStore
import StripeClient
import Synchronization

/// The Events API catch-up (guarantee 9): the events Stripe made while no webhook reached the
/// daemon (an endpoint down, a delivery lost, refunds made in the dashboard) are fetched from
/// `GET /v1/events` and go through the same inbox as a webhook, deduplicated by event id. So an
/// event arriving by webhook, by catch-up or both, in any order, is applied once.
///
/// The cursor is the newest event applied, moved only after its page is applied: a failed page (a
/// 5xx, a timeout, a crash) is fetched again from the same place. Stripe keeps events 30 days.
public final class EventCatchUp: Sendable {
    /// The types `EventInbox` acts on.
    static let types = [
        "checkout.session.completed", "checkout.session.expired", "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed", "charge.refunded", "refund.created", "refund.updated",
        "refund.failed", "customer.subscription.created", "customer.subscription.updated",
        "customer.subscription.deleted",
    ]
    /// How far back Stripe lists events, less an hour so a cursor at the edge is not lost mid-walk.
    static let horizon: Int64 = 30 * 86_400 - 3600
    /// Pages per run when walking forward from the cursor: a longer backlog is taken over several
    /// sweeps, page by page, the cursor moving with each.
    static let maxPagesForward = 20
    /// Pages of a first walk back over the look-back. It has no cursor to resume from, so it reads
    /// the whole look-back before applying (at most 30 days of the types the inbox acts on).
    static let maxPagesBack = 10_000

    private let store: Store
    private let stripe: StripeClient
    private let inbox: EventInbox
    private let lookback: Int64
    private let logger: Logger
    private let now: @Sendable () -> Int64
    private let caughtUp = Atomic<Int>(0)

    init(
        store: Store, stripe: StripeClient, inbox: EventInbox, lookback: Int64, logger: Logger,
        now: @escaping @Sendable () -> Int64
    ) {
        self.store = store
        self.stripe = stripe
        self.inbox = inbox
        self.lookback = lookback
        self.logger = logger
        self.now = now
    }

    /// Events stored by catch-up that no webhook had brought, since start-up.
    public var caughtUpTotal: Int { self.caughtUp.load(ordering: .relaxed) }

    /// Fetches and applies what was missed; returns how many events were new. Never throws: a
    /// failure leaves the cursor where the last applied page put it, for the next run.
    @discardableResult
    public func run(deadline: ContinuousClock.Instant) async -> Int {
        var stored = 0
        do {
            let position = try await self.store.read { try StripeEventCursor.load($0) }
            let now = self.now()
            if let eventID = position.eventID, let created = position.eventCreated, created >= now - Self.horizon {
                stored = try await self.walkForward(from: eventID, deadline: deadline)
            } else {
                if position.eventID != nil {
                    self.logger.warning("the catch-up cursor is older than Stripe keeps events; starting again from the look-back")
                }
                stored = try await self.walkBack(since: max(now - self.lookback, now - Self.horizon), deadline: deadline)
            }
        } catch {
            self.logger.sweepFailure(.warning, "catching up with Stripe's events stopped; resumed next sweep", error: error)
        }
        self.caughtUp.add(stored, ordering: .relaxed)
        return stored
    }

    /// With a cursor: the pages just newer than it, one after the other, each applied oldest first.
    private func walkForward(from eventID: String, deadline: ContinuousClock.Instant) async throws -> Int {
        var cursor = eventID
        var stored = 0
        for _ in 0..<Self.maxPagesForward {
            let page = try await self.stripe.listEvents(
                EventListQuery(types: Self.types, cursor: .endingBefore(cursor)), as: StripeEventSummary.self,
                deadline: deadline)
            CrashPoints.reach("stripe_catch_up.page_fetched")
            stored += try await self.apply(page.events.reversed(), deadline: deadline)
            if let newest = page.events.first {
                try await self.advance(to: newest)
                cursor = newest.eventID
            }
            guard page.hasMore, !page.events.isEmpty else {
                try await self.store.write { try StripeEventCursor.reachedEnd($0, at: self.now()) }
                return stored
            }
        }
        // More remain: the next sweep goes on from the cursor; the list's end was not reached.
        return stored
    }

    /// Without a usable cursor (the first start): every event since `start`, newest first page by
    /// page, then applied oldest first; the newest becomes the cursor.
    private func walkBack(since start: Int64, deadline: ContinuousClock.Instant) async throws -> Int {
        var events: [StripeEventSummary] = []
        var cursor: EventListQuery.Cursor?
        for _ in 0..<Self.maxPagesBack {
            let page = try await self.stripe.listEvents(
                EventListQuery(types: Self.types, createdAtLeast: start, cursor: cursor), as: StripeEventSummary.self,
                deadline: deadline)
            CrashPoints.reach("stripe_catch_up.page_fetched")
            events += page.events
            guard page.hasMore, let oldest = page.events.last else { break }
            cursor = .startingAfter(oldest.eventID)
        }
        let stored = try await self.apply(events.reversed(), deadline: deadline)
        if let newest = events.first { try await self.advance(to: newest) }
        try await self.store.write { try StripeEventCursor.reachedEnd($0, at: self.now()) }
        return stored
    }

    private func apply(_ events: some Sequence<StripeEventSummary>, deadline: ContinuousClock.Instant) async throws -> Int {
        var stored = 0
        for event in events where try await self.inbox.receive(event, deadline: deadline) != .duplicate {
            stored += 1
        }
        CrashPoints.reach("stripe_catch_up.page_applied")
        return stored
    }

    private func advance(to event: StripeEventSummary) async throws {
        try await self.store.write { try StripeEventCursor.advance($0, eventID: event.eventID, created: event.created) }
    }
}
