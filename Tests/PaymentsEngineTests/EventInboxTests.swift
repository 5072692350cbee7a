import PaymentsDomain
import PaymentsEngine
import PaymentsStore
import PaymentsTesting
import Testing

/// The webhook inbox's commits: a new event whose deal is free is stored and applied in one
/// transaction, one that finds its deal busy is stored first (durable before it is answered) and
/// applied later, and a redelivery writes nothing.
@Suite(.serialized) struct EventInboxTests {
    typealias World = EngineWorld

    private func completed(_ payment: PaymentRecord, _ eventID: String) throws -> StripeEventSummary {
        let body = """
            {"id":"\(eventID)","object":"event","type":"checkout.session.completed","created":1,
            "data":{"object":{"id":"\(payment.checkoutSessionID!)","object":"checkout.session","status":"complete",
            "payment_status":"paid","payment_intent":"pi_\(eventID)","client_reference_id":"\(payment.dealID)",
            "metadata":{"deal_id":"\(payment.dealID)","payment_id":"\(payment.paymentID)"}}}}
            """
        return try #require(StripeEventSummary.parse(Array(body.utf8)))
    }

    private func status(_ world: World, _ payment: PaymentRecord) async throws -> PaymentStatus {
        try await world.store.read { try PaymentRecord.load($0, paymentID: payment.paymentID)!.status }
    }

    @Test func aNewEventWhoseDealIsFree_isStoredAndAppliedInOneCommit_andItsRedeliveryWritesNothing() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let (payment, _) = try await world.checkout.createCheckout(world.request("d-one-commit"), deadline: .now + .seconds(30))
        let event = try self.completed(payment, "evt_one_commit")

        let before = world.store.committedTransactions
        #expect(try await world.events.receive(event, deadline: .now + .seconds(10)) == .applied)
        #expect(world.store.committedTransactions - before == 1)
        #expect(try await self.status(world, payment) == .paid)

        let again = world.store.committedTransactions
        #expect(try await world.events.receive(event, deadline: .now + .seconds(10)) == .duplicate)
        #expect(world.store.committedTransactions == again)
    }

    @Test func aNewEventWhoseDealIsBusy_isStoredBeforeTheAnswer_andAppliedOnceTheDealIsFree() async throws {
        let world = try await World()
        defer { world.fake.stop() }
        let (payment, _) = try await world.checkout.createCheckout(world.request("d-busy"), deadline: .now + .seconds(30))
        let event = try self.completed(payment, "evt_busy")

        // Another command holds the deal past the delivery's deadline.
        let outcome = try await world.locks.withLock("deal:\(payment.dealID)", deadline: .now + .seconds(5)) {
            try await world.events.receive(event, deadline: .now + .milliseconds(200))
        }
        #expect(outcome == .queued)
        let pending = try await world.store.read { try StripeEventInbox.pendingIDs($0) }
        #expect(pending == ["evt_busy"])
        #expect(try await self.status(world, payment) == .created)

        #expect(await world.events.applyPending() == 1)
        #expect(try await self.status(world, payment) == .paid)
        #expect(try await world.events.receive(event, deadline: .now + .seconds(10)) == .duplicate)
    }
}
