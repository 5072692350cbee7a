import CSystemShims
import Dispatch
import Foundation
import Logging
import PaymentsClient
import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsService
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient
import Synchronization

/// `make bench`: every figure beside a baseline measured in the same run, so
/// it reads as a ratio on whatever machine runs it (see BENCHMARKS.md).
let seconds = Double(ProcessInfo.processInfo.environment["BENCH_SECONDS"] ?? "") ?? 3
let repositoryRoot = FileManager.default.currentDirectoryPath

let healthFrame = Frame.encode(RequestEnvelope(requestID: 1, method: MethodName.health.fullName).serialized())

func row(_ name: String, _ cells: [String]) {
    print(([name.padding(toLength: 34, withPad: " ", startingAt: 0)] + cells).joined(separator: " | "))
}

func fixed(_ value: Double, _ digits: Int = 0) -> String { String(format: "%.\(digits)f", value) }

paymentsd_stdout_line_buffered()
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .error
    return handler
}
let directory = TemporaryDirectory()
let echoPath = directory.file("echo.sock")
// The physical limit: a C epoll echo server (bench/echo-server.c, built by `make bench`).
let echo = try EchoServerProcess(
    executable: ProcessInfo.processInfo.environment["BENCH_ECHO_SERVER"] ?? "\(repositoryRoot)/.build/echo-server",
    socket: echoPath)
let fake = try FakeStripeProcess(repositoryRoot: repositoryRoot)

let store = try Store(path: directory.file("bench.db"))
let metrics = RequestMetrics()
let stripe = StripeClient(configuration: .init(baseURL: fake.url, secretKey: FakeStripeProcess.apiKey))
let engine = Engine(store: store, stripe: stripe, logger: Logger(label: "bench"))
let webhookSecret = "whsec_bench"
let methods = PaymentsMethods(engine: engine, metrics: metrics, verifier: WebhookVerifier(secrets: [webhookSecret]))
let machine = "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
print("paymentsd-bench: \(seconds) s per run, machine: \(machine)")

func checkoutRequest(deal: String) -> CreateCheckoutRequest {
    CreateCheckoutRequest(
        dealID: deal, mode: .payment, currency: "usd",
        items: [LineItem(sku: "tee", name: "Tee", quantity: 1, unitAmount: 1500)],
        successURL: "https://shop.example/ok", cancelURL: "https://shop.example/no")
}

/// A signed `checkout.session.completed` delivery paying `payment`, as Stripe would send it.
func signedDelivery(_ payment: Payment, _ eventID: String) -> StripeEvent {
    let body = Array(
        """
        {"id":"\(eventID)","object":"event","type":"checkout.session.completed","created":1,
        "data":{"object":{"id":"\(payment.checkoutSessionID)","object":"checkout.session","status":"complete",
        "payment_status":"paid","payment_intent":"pi_\(eventID)","client_reference_id":"\(payment.dealID)",
        "metadata":{"deal_id":"\(payment.dealID)","payment_id":"\(payment.paymentID)"}}}}
        """.utf8)
    let t = Int64(Date().timeIntervalSince1970)
    let mac = WebhookVerifier.hmacSHA256(key: Array(webhookSecret.utf8), data: Array("\(t).".utf8) + body)
    return StripeEvent(payload: body, signature: "t=\(t),v1=" + mac.map { String(format: "%02x", $0) }.joined())
}

/// The same session create a checkout makes, sent straight to `stripe` (the fake's own time).
func directSessionCreate(_ stripe: StripeClient, key: String) async throws {
    let session = CheckoutSessionRequest(
        mode: .payment, currency: "usd", clientReferenceID: "bench-direct", successURL: "https://shop.example/ok",
        cancelURL: "https://shop.example/no", expiresAt: Int64(Date().timeIntervalSince1970) + 1860,
        lineItems: [.init(quantity: 1, price: .inline(unitAmount: 1500, productName: "Tee", sku: "tee"))],
        metadata: [], ownerMetadata: [])
    _ = try await stripe.createCheckoutSession(session, idempotencyKey: key, deadline: .now + .seconds(30))
}

let targets = Targets()
try await InProcessServer.with(table: methods.table(), interceptors: methods.interceptors(), metrics: metrics) { socket, _ in
    print("\n## Health against a raw socket echo of the same \(healthFrame.count)-byte frame")
    row("scenario", ["raw echo rt/s", "Health rt/s", "ratio", "raw p50/p99 us", "Health p50/p99 us"])
    for (name, clients, depth) in [("1 connection", 1, 1), ("16 connections", 16, 1), ("1 conn, 64 pipelined", 1, 64)] {
        let batch = Array([[UInt8]](repeating: healthFrame, count: depth).joined())
        let raw = await measure(socket: echoPath, clients: clients, seconds: seconds) { connection, _, _ in
            try connection.write(batch)
            for _ in 0..<depth { _ = try connection.receiveFrame() }
            return depth
        }
        let health = await measure(socket: socket, clients: clients, seconds: seconds) { connection, _, _ in
            try connection.write(batch)
            for _ in 0..<depth {
                let status = try connection.receive().status
                precondition(status.code == .ok, "Health failed: \(status)")
            }
            return depth
        }
        targets.atLeast("Health/echo, \(name)", health.perSecond / raw.perSecond, depth > 1 ? 0.2 : 0.5)
        if clients == 16 {
            targets.atMost(
                "Health/echo p99, 16 connections", health.percentile(0.99) / raw.percentile(0.99), 3)
        }
        row(name + (depth > 1 ? " (latency per batch)" : ""), [
            fixed(raw.perSecond), fixed(health.perSecond), fixed(health.perSecond / raw.perSecond, 2),
            "\(fixed(raw.percentile(0.5))) / \(fixed(raw.percentile(0.99)))",
            "\(fixed(health.percentile(0.5))) / \(fixed(health.percentile(0.99)))",
        ])
    }

    print("\n## CreateCheckout against the fake Stripe, one client, a new deal per call")
    // The baseline: the same session create sent straight to the fake by the same client library.
    let direct = await measure(socket: echoPath, clients: 1, seconds: seconds) { _, _, iteration in
        waitFor("direct session create") {
            try await directSessionCreate(stripe, key: "bench-direct-\(iteration)-\(UInt64.random(in: 0...UInt64.max))")
        }
        return 1
    }
    let run = UInt64.random(in: 0...UInt64.max)
    let checkoutTransactions = store.committedTransactions
    let checkoutStatements = StatementCounter.run.load(ordering: .relaxed)
    let created = await measure(socket: socket, clients: 1, seconds: seconds) { connection, _, iteration in
        _ = try call(connection, .createCheckout, checkoutRequest(deal: "bench-\(run)-\(iteration)"))
        return 1
    }
    row("scenario", ["calls/s", "mean us", "p50 / p99 us"])
    row("fake Stripe alone (session create)", [fixed(direct.perSecond), fixed(direct.meanMicroseconds),
        "\(fixed(direct.percentile(0.5))) / \(fixed(direct.percentile(0.99)))"])
    row("CreateCheckout through paymentsd", [fixed(created.perSecond), fixed(created.meanMicroseconds),
        "\(fixed(created.percentile(0.5))) / \(fixed(created.percentile(0.99)))"])
    row("service time (total - fake)", ["", fixed(created.meanMicroseconds - direct.meanMicroseconds),
        "ratio total/fake \(fixed(created.meanMicroseconds / direct.meanMicroseconds, 2))"])
    let perCheckout = Double(store.committedTransactions - checkoutTransactions) / Double(max(created.roundTrips, 1))
    let statements = Double(StatementCounter.run.load(ordering: .relaxed) - checkoutStatements)
    print("per CreateCheckout: \(fixed(perCheckout, 2)) durable commits, "
        + "\(fixed(statements / Double(max(created.roundTrips, 1)), 1)) SQL statements (BEGIN, COMMIT and savepoints included)")

    print("\n## GetPayment against Health, one connection")
    let getRequest = PaymentRef(dealID: "bench-\(run)-0")
    let health = await measure(socket: socket, clients: 1, seconds: seconds) { connection, _, _ in
        _ = try call(connection, .health, HealthRequest())
        return 1
    }
    let get = await measure(socket: socket, clients: 1, seconds: seconds) { connection, _, _ in
        _ = try call(connection, .getPayment, getRequest)
        return 1
    }
    row("scenario", ["rt/s", "ratio to Health", "p50 / p99 us"])
    row("Health", [fixed(health.perSecond), "1.00", "\(fixed(health.percentile(0.5))) / \(fixed(health.percentile(0.99)))"])
    targets.atLeast("GetPayment/Health, 1 connection", get.perSecond / health.perSecond, 0.8)
    row("GetPayment", [fixed(get.perSecond), fixed(get.perSecond / health.perSecond, 2),
        "\(fixed(get.percentile(0.5))) / \(fixed(get.percentile(0.99)))"])
    try await setStock(socket: socket, sku: "bench-stock", onHand: 1_000_000, idempotencyKey: "bench-stock-\(run)")
    let stock = await measure(socket: socket, clients: 1, seconds: seconds) { connection, _, _ in
        _ = try call(connection, .getStock, StockRef(sku: "bench-stock"))
        return 1
    }
    targets.atLeast("GetStock/Health, 1 connection", stock.perSecond / health.perSecond, 0.8)
    row("GetStock", [fixed(stock.perSecond), fixed(stock.perSecond / health.perSecond, 2),
        "\(fixed(stock.percentile(0.5))) / \(fixed(stock.percentile(0.99)))"])

    print("\n## 64 clients at once: one deal against 64 deals (rounds of 64 concurrent CreateCheckout)")
    let rounds = 10
    let oneDeal = await measure(socket: socket, clients: 64, seconds: 60, iterations: rounds) { connection, _, iteration in
        _ = try call(connection, .createCheckout, checkoutRequest(deal: "one-\(run)-\(iteration)"))
        return 1
    }
    let manyDeals = await measure(socket: socket, clients: 64, seconds: 60, iterations: rounds) {
        connection, client, iteration in
        _ = try call(connection, .createCheckout, checkoutRequest(deal: "many-\(run)-\(iteration)-\(client)"))
        return 1
    }
    row("scenario", ["calls/s", "sessions made", "p50 / p99 us"])
    row("64 clients, one deal per round", [fixed(oneDeal.perSecond), "\(rounds)",
        "\(fixed(oneDeal.percentile(0.5))) / \(fixed(oneDeal.percentile(0.99)))"])
    row("64 clients, 64 deals per round", [fixed(manyDeals.perSecond), "\(rounds * 64)",
        "\(fixed(manyDeals.percentile(0.5))) / \(fixed(manyDeals.percentile(0.99)))"])

    print("\n## Webhook events against durable SQLite commits, one client")
    // The baseline: one durable commit (BEGIN IMMEDIATE, one insert, COMMIT with synchronous=FULL).
    try await store.write { try Invariants.createProbeTable($0) }
    let commitsStart = ContinuousClock.now
    var commits = 0
    while ContinuousClock.now - commitsStart < .seconds(seconds) {
        try await store.write { try Invariants.writeProbeRow($0) }
        commits += 1
    }
    let commitsElapsed = (ContinuousClock.now - commitsStart).components
    let commitRate =
        Double(commits) / (Double(commitsElapsed.seconds) + Double(commitsElapsed.attoseconds) / 1e18)

    // Open checkouts to pay: each distinct event fulfils one of them.
    let openCount = 400
    let payments: [Payment] = try await blocking {
        let connection = try PaymentsConnection(path: socket)
        return try (0..<openCount).map { index in
            try Payment(serialized: call(connection, .createCheckout, checkoutRequest(deal: "hook-\(run)-\(index)")))
        }
    }
    let transactionsBefore = store.committedTransactions
    let distinct = await measure(socket: socket, clients: 1, seconds: seconds, iterations: openCount) {
        connection, _, iteration in
        let delivery = signedDelivery(payments[iteration], "evt_bench_\(run)_\(iteration)")
        let result = try EventResult(serialized: call(connection, .handleStripeEvent, delivery))
        precondition(result.outcome == .applied, "event not applied: \(result.outcome)")
        return 1
    }
    let commitsPerEvent = Double(store.committedTransactions - transactionsBefore) / Double(max(distinct.roundTrips, 1))
    let repeated = signedDelivery(payments[0], "evt_bench_\(run)_0")
    let duplicates = await measure(socket: socket, clients: 1, seconds: seconds) { connection, _, _ in
        let result = try EventResult(serialized: call(connection, .handleStripeEvent, repeated))
        precondition(result.outcome == .duplicate, "a redelivery was not a duplicate")
        return 1
    }
    row("scenario", ["per second", "ratio to commits", "p50 / p99 us"])
    row("durable SQLite commit (baseline)", [fixed(commitRate), "1.00", ""])
    row("distinct events, each fulfilling", [fixed(distinct.perSecond), fixed(distinct.perSecond / commitRate, 2),
        "\(fixed(distinct.percentile(0.5))) / \(fixed(distinct.percentile(0.99)))"])
    row("the same event redelivered", [fixed(duplicates.perSecond), fixed(duplicates.perSecond / commitRate, 2),
        "\(fixed(duplicates.percentile(0.5))) / \(fixed(duplicates.percentile(0.99)))"])
    print("durable commits per distinct event, 1 sender: \(fixed(commitsPerEvent, 2))")

    // Sixteen senders at once: writes that queue together share a commit (group commit).
    let senders = 16, perSender = 40
    let manyPayments: [Payment] = try await blocking {
        let connection = try PaymentsConnection(path: socket)
        return try (0..<(senders * perSender)).map { index in
            try Payment(serialized: call(connection, .createCheckout, checkoutRequest(deal: "hook16-\(run)-\(index)")))
        }
    }
    let transactions16 = store.committedTransactions
    let distinct16 = await measure(socket: socket, clients: senders, seconds: seconds, iterations: perSender) {
        connection, client, iteration in
        let index = client * perSender + iteration
        let delivery = signedDelivery(manyPayments[index], "evt_bench16_\(run)_\(index)")
        let result = try EventResult(serialized: call(connection, .handleStripeEvent, delivery))
        precondition(result.outcome == .applied, "event not applied: \(result.outcome)")
        return 1
    }
    let writesPerCommit16 = Double(distinct16.roundTrips) / Double(max(store.committedTransactions - transactions16, 1))
    let stockWrites = await measure(socket: socket, clients: senders, seconds: seconds) { connection, client, iteration in
        let response = try connection.call(
            .setStock, payload: StockUpdate(sku: "bench-set-\(client)", onHand: Int64(iteration)).serialized(),
            idempotencyKey: "bench-set-\(run)-\(client)-\(iteration)")
        precondition(response.status.code == .ok, "SetStock failed: \(response.status)")
        return 1
    }
    row("distinct events, 16 senders", [fixed(distinct16.perSecond), fixed(distinct16.perSecond / commitRate, 2),
        "\(fixed(distinct16.percentile(0.5))) / \(fixed(distinct16.percentile(0.99)))"])
    row("SetStock, 16 senders", [fixed(stockWrites.perSecond), fixed(stockWrites.perSecond / commitRate, 2),
        "\(fixed(stockWrites.percentile(0.5))) / \(fixed(stockWrites.percentile(0.99)))"])
    print("events per durable commit, 16 senders: \(fixed(writesPerCommit16, 2))")
    targets.atLeast("distinct events/commits, 1 sender", distinct.perSecond / commitRate, 0.5)
    targets.atLeast("distinct events/commits, 16 senders", distinct16.perSecond / commitRate, 1.0)
    targets.atLeast("redeliveries/commits, 1 sender", duplicates.perSecond / commitRate, 5)
    targets.atLeast("SetStock/commits, 16 senders", stockWrites.perSecond / commitRate, 1.0)
    // A checkout's own time (total minus the fake's session create) against two durable commits.
    let ownMicroseconds = created.percentile(0.5) - direct.percentile(0.5)
    targets.atMost("CreateCheckout own p50 / two durable commits", ownMicroseconds / (2 * 1e6 / commitRate), 1.5)

    print("\n## RefundPayment against the fake Stripe's own refund create, one client, 1 cent per refund")
    // Two paid payments large enough for every refund of the run: one refunded straight at the
    // fake by the same client library (the baseline), one through paymentsd.
    let paid: [Payment] = try await blocking {
        let connection = try PaymentsConnection(path: socket)
        return try (0..<2).map { index in
            let request = CreateCheckoutRequest(
                dealID: "refund-\(run)-\(index)", mode: .payment, currency: "usd",
                items: [LineItem(sku: "gift", name: "Gift card", quantity: 1000, unitAmount: 90_000)],
                successURL: "https://shop.example/ok", cancelURL: "https://shop.example/no")
            let open = try Payment(serialized: call(connection, .createCheckout, request))
            _ = try fake.control(
                "POST", "/_fake/sessions/\(open.checkoutSessionID)/complete", json: #"{"paid": true}"#)
            return try Payment(serialized: call(connection, .confirmCheckout, PaymentRef(paymentID: open.paymentID)))
        }
    }
    let directRefunds = await measure(socket: echoPath, clients: 1, seconds: seconds) { _, _, iteration in
        let refund = RefundRequest(paymentIntent: paid[0].paymentIntentID, amount: 1, reason: nil, metadata: [])
        waitFor("direct refund") {
            _ = try await stripe.createRefund(
                refund, idempotencyKey: "bench-refund-\(run)-\(iteration)", deadline: .now + .seconds(30))
        }
        return 1
    }
    let refunds = await measure(socket: socket, clients: 1, seconds: seconds) { connection, _, iteration in
        let response = try connection.call(
            .refundPayment, payload: RefundRequest(paymentID: paid[1].paymentID, amount: 1).serialized(),
            idempotencyKey: "bench-\(run)-\(iteration)")
        precondition(response.status.code == .ok, "RefundPayment failed: \(response.status)")
        let refund = try Refund(serialized: response.payload)
        precondition(refund.status == .succeeded, "refund not SUCCEEDED: \(refund.status.name)")
        return 1
    }
    row("scenario", ["calls/s", "mean us", "p50 / p99 us"])
    row("fake Stripe alone (refund create)", [fixed(directRefunds.perSecond), fixed(directRefunds.meanMicroseconds),
        "\(fixed(directRefunds.percentile(0.5))) / \(fixed(directRefunds.percentile(0.99)))"])
    row("RefundPayment through paymentsd", [fixed(refunds.perSecond), fixed(refunds.meanMicroseconds),
        "\(fixed(refunds.percentile(0.5))) / \(fixed(refunds.percentile(0.99)))"])
    row("service time (total - fake)", ["", fixed(refunds.meanMicroseconds - directRefunds.meanMicroseconds),
        "ratio total/fake \(fixed(refunds.meanMicroseconds / directRefunds.meanMicroseconds, 2))"])

    try await measureStripeOverTLS(plainSocket: socket, run: run)
    try await measureMemory(socket: socket, run: run)
    if let uri = ProcessInfo.processInfo.environment["BENCH_POSTGRES_URI"], !uri.isEmpty {
        try await measurePostgres(uri: uri, sqliteSocket: socket, run: run)
    } else {
        print("\n## PostgreSQL: skipped (BENCH_POSTGRES_URI is not set; `make bench` starts a server and sets it)")
    }
}

targets.printSummary()
echo.stop()
