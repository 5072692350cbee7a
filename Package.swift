// swift-tools-version:6.0
import PackageDescription

/// paymentsd: a payments daemon that keeps Stripe Checkout, stock, claims and
/// refunds consistent for the services of one host. See README.md.
let package = Package(
    name: "paymentsd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "paymentsd", targets: ["paymentsd"]),
        .executable(name: "paymentsctl", targets: ["paymentsctl"]),
        .executable(name: "paymentsd-bench", targets: ["paymentsd-bench"]),
        .executable(name: "paymentsd-fuzz", targets: ["paymentsd-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // MARK: C libraries from Debian, each behind a thin module map and shim header.
        .systemLibrary(
            name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // Debian's libpq: the PostgreSQL store, blocking calls like SQLite's, on connections of a pool.
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        // Debian's OpenSSL libcrypto: SHA-256 and HMAC without building a crypto library of our own.
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // Header-only glue for glibc declarations Swift cannot import (struct ucred, stdio globals).
        .systemLibrary(name: "CSystemShims"),
        // protoc-c output for proto/payments/v1/payments.proto (`make proto` regenerates it).
        .target(name: "PaymentsProtoC", dependencies: ["CProtobufC"]),

        // MARK: Swift modules, one job each.
        // Frames and protobuf messages as Swift values; no I/O.
        .target(name: "PaymentsWire", dependencies: ["PaymentsProtoC", "CProtobufC"]),
        // The RPC server: socket, framing, authorisation, deadlines, dispatch, request metrics.
        .target(
            name: "PaymentsRPC",
            dependencies: [
                "PaymentsWire", "CSystemShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The optional HTTP endpoint: Stripe's webhooks, Prometheus' scrape and a health check, each
        // answered through the RPC dispatcher.
        .target(
            name: "PaymentsHTTP",
            dependencies: [
                "PaymentsRPC", "PaymentsWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The domain in pure types: statuses and their state machine, records, requests, refusals; no I/O.
        .target(name: "PaymentsDomain"),
        // SQLite or PostgreSQL: connections, migrations, the writers, advisory locks, and every query,
        // typed per aggregate.
        .target(
            name: "PaymentsStore",
            dependencies: ["PaymentsDomain", "CSQLite", "CPostgres", "CSystemShims", .product(name: "Logging", package: "swift-log")]),
        // Stripe's REST API over libcurl: form encoding, idempotency keys, retries, circuit breaker.
        .target(name: "StripeClient", dependencies: ["CCurl"]),
        // The commands: keyed lock table, operations with recovery points, checkout, stock, audit.
        .target(
            name: "PaymentsEngine",
            dependencies: [
                "PaymentsDomain", "PaymentsStore", "StripeClient", "CCrypto",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The methods of payments.v1.Payments, from wire messages to store and engine.
        .target(
            name: "PaymentsService",
            dependencies: [
                "PaymentsDomain", "PaymentsWire", "PaymentsRPC", "PaymentsStore", "PaymentsEngine", "StripeClient",
                "CCrypto",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Daemon wiring: configuration, logging, systemd integration, services.
        .target(
            name: "PaymentsDaemon",
            dependencies: [
                "PaymentsService", "PaymentsRPC", "PaymentsHTTP", "PaymentsStore", "PaymentsWire", "PaymentsDomain",
                "PaymentsEngine", "StripeClient", "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .executableTarget(name: "paymentsd", dependencies: ["PaymentsDaemon"]),
        // A small blocking client of the wire protocol, for the CLI and the benchmark.
        .target(name: "PaymentsClient", dependencies: ["PaymentsWire"]),
        .executableTarget(
            name: "paymentsctl",
            dependencies: [
                "PaymentsClient", "PaymentsWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "paymentsd-bench",
            dependencies: [
                "PaymentsClient", "PaymentsWire", "PaymentsRPC", "PaymentsService", "PaymentsStore", "PaymentsTesting",
                "PaymentsDomain", "PaymentsEngine", "StripeClient", "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        // The decoders under libFuzzer (`make fuzz`), or their corpus replayed (`make test`).
        .executableTarget(
            name: "paymentsd-fuzz",
            dependencies: [
                "PaymentsWire", "PaymentsRPC", "PaymentsHTTP", "PaymentsService", "PaymentsStore", "PaymentsEngine",
                "StripeClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        // Test support shared by the Swift test targets.
        .target(
            name: "PaymentsTesting",
            dependencies: [
                "PaymentsStore", "PaymentsRPC", "PaymentsWire", "PaymentsClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .testTarget(name: "PaymentsDomainTests", dependencies: ["PaymentsDomain"]),
        .testTarget(name: "PaymentsWireTests", dependencies: ["PaymentsWire"]),
        .testTarget(
            name: "PaymentsEngineTests",
            dependencies: ["PaymentsDomain", "PaymentsEngine", "PaymentsTesting", "PaymentsStore", "PaymentsWire"]),
        .testTarget(name: "StripeClientTests", dependencies: ["StripeClient"]),
        .testTarget(name: "PaymentsStoreTests", dependencies: ["PaymentsDomain", "PaymentsStore", "PaymentsTesting"]),
        .testTarget(
            name: "PaymentsRPCTests",
            dependencies: [
                "PaymentsRPC", "PaymentsWire", "PaymentsTesting", "PaymentsClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "PaymentsDaemonTests", dependencies: ["PaymentsDaemon", "PaymentsHTTP", "PaymentsTesting"]),
        .testTarget(
            name: "PaymentsHTTPTests",
            dependencies: ["PaymentsHTTP", .product(name: "NIOHTTP1", package: "swift-nio")]),
    ]
)
