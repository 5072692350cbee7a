import Dispatch
import Foundation
import PaymentsClient
import Logging
import PaymentsEngine
import PaymentsRPC
import PaymentsService
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient
import Synchronization

/// Issue 13, item 4: Stripe behind TLS. A second daemon (own store) calls the fake through a local
/// TLS terminator whose CA it trusts; the plain daemon of the run is measured beside it, each
/// against the fake's own time over the same transport.
func measureStripeOverTLS(plainSocket: String, run: UInt64) async throws {
    print("\n## CreateCheckout over TLS against plain HTTP (the fake behind bench/tls-terminator.py)")
    let tlsDirectory = directory.file("tls")
    try FileManager.default.createDirectory(atPath: tlsDirectory, withIntermediateDirectories: true)
    let terminator = try TLSTerminatorProcess(repositoryRoot: repositoryRoot, targetURL: fake.url, directory: tlsDirectory)
    defer { terminator.stop() }
    var configuration = StripeClient.Configuration(baseURL: terminator.url, secretKey: FakeStripeProcess.apiKey)
    configuration.caFile = terminator.caFile
    let tlsStripe = StripeClient(configuration: configuration)
    // The fake's own time over TLS through a client of its own, so that `tlsStripe` counts the
    // daemon's connections only.
    let tlsDirectStripe = StripeClient(configuration: configuration)
    let callsInFlight = configuration.maxCallsInFlight
    let tlsMetrics = RequestMetrics()
    let tlsMethods = PaymentsMethods(
        engine: Engine(store: try Store(path: directory.file("tls.db")), stripe: tlsStripe, logger: Logger(label: "tls")),
        metrics: tlsMetrics, verifier: WebhookVerifier(secrets: [webhookSecret]))
    let checkouts = 100

    try await InProcessServer.with(table: tlsMethods.table(), interceptors: tlsMethods.interceptors(), metrics: tlsMetrics) {
        tlsSocket, _ in
        // The four kinds of call interleaved, one of each per round, so that the machine's drift
        // (it is shared) falls on all four alike; one latency list each.
        let opened = try await blocking {
            let plainConnection = try PaymentsConnection(path: plainSocket)
            let tlsConnection = try PaymentsConnection(path: tlsSocket)
            var samples = [[UInt64]](repeating: [], count: 4)
            func timed(_ kind: Int, _ body: () throws -> Void) rethrows {
                let start = DispatchTime.now().uptimeNanoseconds
                try body()
                samples[kind].append(DispatchTime.now().uptimeNanoseconds - start)
            }
            for iteration in 0..<checkouts {
                try timed(0) {
                    _ = try call(plainConnection, .createCheckout, checkoutRequest(deal: "plain-\(run)-\(iteration)"))
                }
                try timed(1) {
                    _ = try call(tlsConnection, .createCheckout, checkoutRequest(deal: "tls-\(run)-\(iteration)"))
                }
                timed(2) { waitFor("direct session create") { try await directSessionCreate(stripe, key: "bp-\(run)-\(iteration)") } }
                timed(3) { waitFor("direct session create") { try await directSessionCreate(tlsDirectStripe, key: "bt-\(run)-\(iteration)") } }
            }
            // The daemon's client had no connection before: the first handshake is counted.
            let opened = tlsStripe.connectionsOpened
            return (opened, samples.map { Measurement(roundTrips: $0.count, elapsed: 1, latenciesNS: $0) })
        }
        let (connections, figures) = opened
        let (plain, tls, plainDirect, tlsDirect) = (figures[0], figures[1], figures[2], figures[3])

        // 64 checkouts at once on 64 deals: how many threads the process has at most meanwhile.
        let threadsBefore = ProcessFigures.threads
        let sampling = Atomic<Bool>(true)
        let peak = Shared(threadsBefore)
        let sampler = Thread {
            while sampling.load(ordering: .relaxed) {
                let now = ProcessFigures.threads
                peak.withLock { $0 = max($0, now) }
                usleep(2000)
            }
        }
        sampler.start()
        let burst = await measure(socket: tlsSocket, clients: 64, seconds: 60, iterations: 1) { connection, client, _ in
            _ = try call(connection, .createCheckout, checkoutRequest(deal: "tls-burst-\(run)-\(client)"))
            return 1
        }
        sampling.store(false, ordering: .relaxed)
        precondition(burst.roundTrips == 64)
        // The 64 client threads and the sampler are the bench's own, not the daemon's.
        let added = peak.value - threadsBefore - 64 - 1

        row("scenario", ["p50 us", "fake alone p50 us", "own p50 us", "connections opened"])
        let plainOwn = plain.percentile(0.5) - plainDirect.percentile(0.5)
        let tlsOwn = tls.percentile(0.5) - tlsDirect.percentile(0.5)
        row("\(checkouts) checkouts, plain HTTP", [
            fixed(plain.percentile(0.5)), fixed(plainDirect.percentile(0.5)), fixed(plainOwn), "",
        ])
        row("\(checkouts) checkouts, TLS", [
            fixed(tls.percentile(0.5)), fixed(tlsDirect.percentile(0.5)), fixed(tlsOwn), "\(connections)",
        ])
        print("64 concurrent checkouts over TLS: threads \(threadsBefore) before, \(added) more at most "
            + "(beside the bench's 64 clients); Stripe calls in flight at most \(callsInFlight)")
        targets.atMost("Stripe over TLS: connections per 100 sequential checkouts", Double(connections), 2)
        targets.atMost("Stripe over TLS: checkout own p50 TLS/plain", tlsOwn / plainOwn, 1.2)
        targets.atMost(
            "threads added by 64 concurrent TLS checkouts", Double(added),
            Double(callsInFlight))
    }
}

/// Issue 13, item 5: resident memory after 200,000 mixed calls against after the first 10,000.
/// Each round of 20 calls opens a checkout, pays it by a webhook event, and reads: Health,
/// GetPayment and GetStock, six each.
func measureMemory(socket: String, run: UInt64) async throws {
    print("\n## Memory: RSS of the process over 200,000 mixed calls (4 clients)")
    let total = 200_000, early = 10_000, perRound = 20, clients = 4
    let calls = Atomic<Int>(0)
    let residentEarly = Atomic<Int>(0)
    let rounds = total / perRound / clients
    let residentStart = ProcessFigures.residentBytes
    let mixed = await measure(socket: socket, clients: clients, seconds: 3600, iterations: rounds) {
        connection, client, iteration in
        let deal = "mem-\(run)-\(client)-\(iteration)"
        let payment = try Payment(serialized: call(connection, .createCheckout, checkoutRequest(deal: deal)))
        let result = try EventResult(
            serialized: call(connection, .handleStripeEvent, signedDelivery(payment, "evt_mem_\(run)_\(client)_\(iteration)")))
        precondition(result.outcome == .applied, "event not applied: \(result.outcome)")
        for _ in 0..<6 {
            _ = try call(connection, .health, HealthRequest())
            _ = try call(connection, .getPayment, PaymentRef(dealID: deal))
            _ = try call(connection, .getStock, StockRef(sku: "bench-stock"))
        }
        let after = calls.add(perRound, ordering: .relaxed).newValue
        if after >= early && after - perRound < early { residentEarly.store(ProcessFigures.residentBytes, ordering: .relaxed) }
        return perRound
    }
    let residentEnd = ProcessFigures.residentBytes
    let growth = Double(residentEnd - residentEarly.load(ordering: .relaxed)) / 1_048_576
    row("scenario", ["calls", "calls/s", "RSS MiB"])
    row("before", ["0", "", fixed(Double(residentStart) / 1_048_576, 1)])
    row("after the first 10,000", ["\(early)", "", fixed(Double(residentEarly.load(ordering: .relaxed)) / 1_048_576, 1)])
    row("after all", ["\(mixed.roundTrips)", fixed(mixed.perSecond), fixed(Double(residentEnd) / 1_048_576, 1)])
    targets.atMost("RSS growth 10,000 -> 200,000 mixed calls, MiB", growth, 20)
}
