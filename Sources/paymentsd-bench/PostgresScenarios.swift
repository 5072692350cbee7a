import Foundation
import Logging
import PaymentsClient
import PaymentsEngine
import PaymentsRPC
import PaymentsService
import PaymentsStore
import PaymentsTesting
import PaymentsWire
import StripeClient

/// Issue 16: the same calls on PostgreSQL beside SQLite, in one run. A second daemon (its own
/// store on the throwaway server `make bench` starts, BENCH_POSTGRES_URI) and the SQLite daemon of
/// the run are measured in alternation, three rounds each, so the shared machine's drift falls on
/// both alike; each figure is a median of the rounds, and each is a ratio to a baseline of its run.
func measurePostgres(uri: String, sqliteSocket: String, run: UInt64) async throws {
    print("\n## PostgreSQL beside SQLite (GetStock against Health; CreateCheckout's own time against one durable commit)")
    let pgStore = try Store(postgres: PostgresConfiguration(uri: uri))
    let pgMetrics = RequestMetrics()
    let pgMethods = PaymentsMethods(
        engine: Engine(store: pgStore, stripe: stripe, logger: Logger(label: "postgres")),
        metrics: pgMetrics, verifier: WebhookVerifier(secrets: [webhookSecret]))
    try await pgStore.write { try Invariants.createProbeTable($0) }

    try await InProcessServer.with(table: pgMethods.table(), interceptors: pgMethods.interceptors(), metrics: pgMetrics) {
        pgSocket, _ in
        for socket in [sqliteSocket, pgSocket] {
            try await setStock(
                socket: socket, sku: "bench-pg-stock", onHand: 1_000_000, idempotencyKey: "bench-pg-stock-\(run)")
        }
        struct Round {
            var stockOverHealth: Double
            var ownMicroseconds: Double
            var commitMicroseconds: Double
        }
        func round(_ socket: String, _ store: Store, label: String, index: Int) async throws -> Round {
            let health = await measure(socket: socket, clients: 1, seconds: seconds / 2) { connection, _, _ in
                _ = try call(connection, .health, HealthRequest())
                return 1
            }
            let stock = await measure(socket: socket, clients: 1, seconds: seconds / 2) { connection, _, _ in
                _ = try call(connection, .getStock, StockRef(sku: "bench-pg-stock"))
                return 1
            }
            let direct = await measure(socket: echoPath, clients: 1, seconds: seconds / 2) { _, _, iteration in
                waitFor("direct session create") {
                    try await directSessionCreate(stripe, key: "bench-pg-direct-\(run)-\(label)-\(index)-\(iteration)")
                }
                return 1
            }
            let created = await measure(socket: socket, clients: 1, seconds: seconds / 2) { connection, _, iteration in
                _ = try call(connection, .createCheckout, checkoutRequest(deal: "bench-pg-\(run)-\(label)-\(index)-\(iteration)"))
                return 1
            }
            let commitsStart = ContinuousClock.now
            var commits = 0
            while ContinuousClock.now - commitsStart < .seconds(seconds / 2) {
                try await store.write { try Invariants.writeProbeRow($0) }
                commits += 1
            }
            let elapsed = Double((ContinuousClock.now - commitsStart) / .microseconds(1))
            return Round(
                stockOverHealth: stock.perSecond / health.perSecond,
                ownMicroseconds: created.percentile(0.5) - direct.percentile(0.5),
                commitMicroseconds: elapsed / Double(max(commits, 1)))
        }
        var sqlite: [Round] = []
        var postgres: [Round] = []
        for index in 0..<3 {
            sqlite.append(try await round(sqliteSocket, store, label: "sqlite", index: index))
            postgres.append(try await round(pgSocket, pgStore, label: "postgresql", index: index))
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        row("store", ["GetStock/Health", "checkout own p50 us", "one commit us", "own / commit"])
        for (name, rounds) in [("SQLite (file, synchronous=FULL)", sqlite), ("PostgreSQL (Unix socket, fsync on)", postgres)] {
            let own = median(rounds.map(\.ownMicroseconds))
            let commit = median(rounds.map(\.commitMicroseconds))
            row(name, [fixed(median(rounds.map(\.stockOverHealth)), 2), fixed(own), fixed(commit), fixed(own / commit, 2)])
        }
        let ownRatio = median(postgres.map(\.ownMicroseconds)) / median(sqlite.map(\.ownMicroseconds))
        print("CreateCheckout own time, PostgreSQL/SQLite: \(fixed(ownRatio, 2)) (medians of 3 alternating rounds)")
    }
}
