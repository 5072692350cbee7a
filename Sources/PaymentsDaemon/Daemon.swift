import CSystemShims
import Logging
import NIOCore
import NIOPosix
import PaymentsEngine
import PaymentsHTTP
import PaymentsRPC
import PaymentsService
import PaymentsStore
import PaymentsWire
import ServiceLifecycle
import StripeClient

#if canImport(Glibc)
import Glibc
#endif

/// The `paymentsd` command: configuration, wiring and the service group.
public enum Daemon {
    /// Exit statuses of sysexits(3) the daemon uses.
    public enum ExitStatus {
        public static let ok: Int32 = 0
        public static let failure: Int32 = 1
        public static let usage: Int32 = 64
        /// EX_TEMPFAIL: another paymentsd serves the database; the unit does not restart on it.
        public static let databaseInUse: Int32 = 75
        public static let config: Int32 = 78
    }

    /// How long SIGTERM waits for requests in flight before cancelling them.
    static let drainTimeout: Duration = .seconds(10)

    /// Runs the command line `arguments` (without the program name) and returns the exit status.
    public static func main(arguments: [String], environment: [String: String]) async -> Int32 {
        var environment = environment
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            switch argument {
            case "--version":
                print("paymentsd \(PaymentsVersion.current)")
                return ExitStatus.ok
            case "crash-points":
                for name in CrashPoints.all { print(name) }
                return ExitStatus.ok
            case "--socket":
                guard let path = remaining.popFirst() else { return Self.usageError("--socket needs a path") }
                environment["PAYMENTSD_SOCKET"] = path
            case "-h", "--help":
                print("usage: paymentsd [--socket PATH] | paymentsd --version | paymentsd crash-points")
                print("Configuration comes from the environment; see the README and docs of protocol.md section 7.")
                return ExitStatus.ok
            default:
                return Self.usageError("unknown argument \"\(argument.prefix(64))\"")
            }
        }

        let configuration: DaemonConfiguration
        do {
            configuration = try DaemonConfiguration.load(environment: environment)
        } catch let error as ConfigurationError {
            Self.printError(error.description)
            return ExitStatus.config
        } catch {
            Self.printError("configuration error: \(error)")
            return ExitStatus.config
        }
        return await Self.serve(configuration, environment: environment)
    }

    private static func serve(_ configuration: DaemonConfiguration, environment: [String: String]) async -> Int32 {
        let inherited = SocketActivation.inheritedListeners(environment: environment)
        if let problem = StartupCheck.paths(configuration, socketActivated: inherited.rpc != nil) {
            Self.printError(problem)
            return ExitStatus.config
        }
        let databaseLock: DatabaseLock?
        do {
            databaseLock = try Self.lockDatabase(configuration)
        } catch {
            return error.status
        }
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in JournalLogHandler(label: label, level: level) }
        let logger = Logger(label: "paymentsd")
        CrashPoints.arm(configuration.crashAt)

        let store: Store
        do {
            store = try Self.openStore(configuration, logger: logger)
        } catch {
            return error.status
        }

        // Frames of up to PAYMENTSD_MAX_FRAME and their copies are mapped and unmapped on their own,
        // so their memory returns to the kernel when they are freed (glibc otherwise raises this
        // threshold after the first large free and keeps such buffers in the heap).
        paymentsd_malloc_map_large_buffers(256 << 10)
        let metrics = RequestMetrics()
        var stripeConfiguration = StripeClient.Configuration(
            baseURL: configuration.stripeAPIBase, secretKey: configuration.stripeSecretKey.value)
        stripeConfiguration.caFile = configuration.stripeCAFile
        let stripe = StripeClient(configuration: stripeConfiguration)
        var checkoutConfiguration = CheckoutEngine.Configuration()
        checkoutConfiguration.checkoutTTL = Int64(configuration.checkoutTTL)
        checkoutConfiguration.askStripeAfter = Int64(configuration.askStripeAfter)
        checkoutConfiguration.eventsLookback = Int64(configuration.eventsLookback)
        let engine = Engine(store: store, stripe: stripe, configuration: checkoutConfiguration, logger: logger)
        let methods = PaymentsMethods(
            engine: engine, metrics: metrics,
            verifier: WebhookVerifier(secrets: configuration.stripeWebhookSecrets.map(\.value)))
        var dispatcherConfiguration = Dispatcher.Configuration()
        dispatcherConfiguration.testDelay = configuration.testDelayMS.map { .milliseconds($0) }
        let dispatcher = Dispatcher(
            table: methods.table(), interceptors: methods.interceptors(),
            policy: CallerPolicy(allowedGroups: configuration.allowedGroups, adminGroups: configuration.adminGroups),
            metrics: metrics, configuration: dispatcherConfiguration, logger: logger)

        let listener: RPCServer.Listener = inherited.rpc.map { .inherited(descriptor: $0) } ?? .path(configuration.socketPath)
        var serverConfiguration = RPCServer.Configuration(listener: listener)
        serverConfiguration.maxFrame = configuration.maxFrame
        serverConfiguration.maxConnections = configuration.maxConnections
        serverConfiguration.frameTimeout = configuration.frameTimeout
        serverConfiguration.idleTimeout = configuration.idleTimeout
        serverConfiguration.memoryBudget = configuration.memoryBudget
        serverConfiguration.connectionBudget = configuration.connectionBudget
        let notifier = SystemdNotifier(environment: environment)
        let server = RPCServer(
            configuration: serverConfiguration, dispatcher: dispatcher, metrics: metrics, logger: logger,
            onListening: { notifier.notify("READY=1\nSTATUS=serving") })
        let systemd = SystemdService(
            notifier: notifier, watchdogInterval: SystemdNotifier.watchdogInterval(environment: environment),
            store: store)

        // The HTTP endpoint: systemd's socket when it passed one, else PAYMENTSD_HTTP_LISTEN, else none.
        let httpListener = inherited.http.map { HTTPListener.inherited(descriptor: $0) } ?? configuration.httpListen
        let http = httpListener.map { listener in
            var httpConfiguration = HTTPServer.Configuration(listener: listener)
            // The socket's limits hold for HTTP too: a request must arrive within the frame timeout.
            httpConfiguration.requestTimeout = configuration.frameTimeout
            httpConfiguration.idleTimeout = configuration.idleTimeout
            return HTTPServer(configuration: httpConfiguration, dispatcher: dispatcher, logger: logger)
        }

        var groupConfiguration = ServiceGroupConfiguration(
            services: [
                .init(service: server),
            ] + (http.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []) + [
                .init(
                    service: JanitorService(janitor: engine.janitor, interval: .seconds(configuration.janitorInterval)),
                    successTerminationBehavior: .ignore),
                .init(service: systemd, successTerminationBehavior: .ignore),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = Self.drainTimeout
        let group = ServiceGroup(configuration: groupConfiguration)
        logger.notice(
            "starting",
            metadata: [
                "version": "\(PaymentsVersion.current)", "database": "\(store.location)",
                "stripe_api_base": "\(configuration.stripeAPIBase)",
            ])
        defer { withExtendedLifetime(databaseLock) {} }
        do {
            try await group.run()
            logger.notice("stopped")
            return ExitStatus.ok
        } catch {
            logger.critical("stopped on an error", metadata: ["error": "\(error)"])
            return ExitStatus.failure
        }
    }

    private static func usageError(_ message: String) -> Int32 {
        Self.printError("paymentsd: \(message)")
        return ExitStatus.usage
    }

    static func printError(_ line: String) {
        // Before logging is set up, still in the journal's format.
        let text = "<3>\(line)\n"
        text.withCString { _ = write(2, $0, strlen($0)) }
    }
}
