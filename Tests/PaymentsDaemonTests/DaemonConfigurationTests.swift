import PaymentsDaemon
import Testing

@Suite struct DaemonConfigurationTests {
    static let minimal = ["STRIPE_SECRET_KEY": "sk_test_abc", "STRIPE_WEBHOOK_SECRETS": "whsec_one"]

    private func load(_ extra: [String: String], files: [String: String] = [:]) throws -> DaemonConfiguration {
        try DaemonConfiguration.load(
            environment: Self.minimal.merging(extra) { _, new in new }, readFile: { files[$0] },
            resolveGroup: { $0 == "staff" ? 50 : nil })
    }

    private func failure(_ extra: [String: String], files: [String: String] = [:]) -> ConfigurationError? {
        do {
            _ = try self.load(extra, files: files)
            return nil
        } catch {
            return error as? ConfigurationError
        }
    }

    @Test func defaults_workForALocalRun() throws {
        let configuration = try self.load([:])
        #expect(configuration.socketPath == "/run/paymentsd/paymentsd.sock")
        #expect(configuration.databasePath == "/var/lib/paymentsd/payments.db")
        #expect(configuration.maxFrame == 1_048_576)
        #expect(configuration.checkoutTTL == 1800)
        #expect(configuration.janitorInterval == 30)
        #expect(configuration.logLevel == .info)
        #expect(configuration.stripeAPIBase == "https://api.stripe.com")
        #expect(configuration.allowedGroups.isEmpty && configuration.adminGroups.isEmpty)
        #expect(configuration.crashAt == nil && configuration.testDelayMS == nil)
    }

    @Test func aPostgresURI_selectsPostgreSQL_withTheCredentialsPassword() throws {
        #expect(try self.load([:]).postgres == nil)
        let uri = "postgresql:///payments?host=/run/postgresql"
        let configuration = try self.load(
            ["PAYMENTSD_DB": uri, "CREDENTIALS_DIRECTORY": "/run/credentials/paymentsd.service",
             "PAYMENTSD_DB_POOL_SIZE": "3"],
            files: ["/run/credentials/paymentsd.service/postgres-password": "s3cret\n"])
        let postgres = try #require(configuration.postgres)
        #expect(postgres.uri == uri && postgres.password == "s3cret" && postgres.poolSize == 3)
        #expect(postgres.connectTimeoutSeconds == 5 && postgres.busyTimeoutMS == 5000)
        #expect(try self.load(["PAYMENTSD_DB": "postgres://db/payments"]).postgres?.password == nil)
        #expect(self.failure(["PAYMENTSD_DB": uri, "PAYMENTSD_DB_POOL_SIZE": "0"])?.variable == "PAYMENTSD_DB_POOL_SIZE")
        #expect(self.failure(["PAYMENTSD_DB": uri, "PAYMENTSD_DB_CONNECT_TIMEOUT": "x"])?.variable == "PAYMENTSD_DB_CONNECT_TIMEOUT")
    }

    @Test func stripeCAFile_mustBeAReadablePEMFile() throws {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        #expect(try self.load([:]).stripeCAFile == nil)
        #expect(try self.load(["STRIPE_CA_FILE": "/tmp/ca.pem"], files: ["/tmp/ca.pem": pem]).stripeCAFile == "/tmp/ca.pem")
        #expect(self.failure(["STRIPE_CA_FILE": "/tmp/missing.pem"])?.variable == "STRIPE_CA_FILE")
        #expect(self.failure(["STRIPE_CA_FILE": "/tmp/ca.pem"], files: ["/tmp/ca.pem": "not a certificate"])?.variable
            == "STRIPE_CA_FILE")
    }

    @Test func stateDirectory_holdsTheDatabase() throws {
        #expect(try self.load(["STATE_DIRECTORY": "/var/lib/x:/other"]).databasePath == "/var/lib/x/payments.db")
        #expect(try self.load(["STATE_DIRECTORY": "/var/lib/x", "PAYMENTSD_DB": "/tmp/p.db"]).databasePath == "/tmp/p.db")
    }

    @Test func timeoutsInSeconds_takeDecimals() throws {
        let configuration = try self.load(["PAYMENTSD_FRAME_TIMEOUT": "0.5", "PAYMENTSD_IDLE_TIMEOUT": "2"])
        #expect(configuration.frameTimeout == .milliseconds(500))
        #expect(configuration.idleTimeout == .seconds(2))
    }

    @Test func groups_byNameOrNumber() throws {
        let configuration = try self.load(["PAYMENTSD_ALLOW_GIDS": "staff, 1000", "PAYMENTSD_ADMIN_GIDS": "7"])
        #expect(configuration.allowedGroups == [50, 1000])
        #expect(configuration.adminGroups == [7])
    }

    @Test(arguments: [
        ("PAYMENTSD_MAX_FRAME", "abc"), ("PAYMENTSD_MAX_FRAME", "0"), ("PAYMENTSD_CHECKOUT_TTL", "60"),
        ("PAYMENTSD_CHECKOUT_TTL", "86401"), ("PAYMENTSD_JANITOR_INTERVAL", "-1"), ("PAYMENTSD_LOG_LEVEL", "loud"),
        ("PAYMENTSD_ALLOW_GIDS", "no-such-group"), ("PAYMENTSD_ADMIN_GIDS", "staff,nope"),
        ("STRIPE_API_BASE", "ftp://x"), ("STRIPE_SECRET_KEY", "pk_test_public"), ("STRIPE_WEBHOOK_SECRETS", "nope"),
        ("PAYMENTSD_TEST_DELAY_MS", "soon"), ("PAYMENTSD_FRAME_TIMEOUT", "0"), ("PAYMENTSD_IDLE_TIMEOUT", "nan"),
        ("PAYMENTSD_MAX_CONNECTIONS", "0"), ("PAYMENTSD_MEMORY_BUDGET", "1024"), ("PAYMENTSD_BUSY_TIMEOUT_MS", "-5"),
        ("PAYMENTSD_SOCKET", "/run/" + String(repeating: "s", count: 103)),
    ])
    func badValue_namesTheVariable(variable: String, value: String) {
        #expect(self.failure([variable: value])?.variable == variable)
    }

    @Test func missingSecrets_areRequired() {
        #expect(self.failure(["STRIPE_SECRET_KEY": ""])?.variable == "STRIPE_SECRET_KEY")
        #expect(self.failure(["STRIPE_WEBHOOK_SECRETS": " , "])?.variable == "STRIPE_WEBHOOK_SECRETS")
    }

    @Test func errors_neverEchoASecret() {
        let error = self.failure(["STRIPE_SECRET_KEY": "sk_live_TOPSECRET with space"])
        #expect(error?.variable == "STRIPE_SECRET_KEY")
        let text = error.map { "\($0)" } ?? ""
        #expect(!text.isEmpty)
        #expect(text.contains("TOPSECRET") == false, "the error must not echo the secret: \(text)")
    }

    @Test func credentialsDirectory_winsOverTheEnvironment() throws {
        let configuration = try self.load(
            ["CREDENTIALS_DIRECTORY": "/creds"],
            files: ["/creds/stripe-secret-key": "sk_test_fromfile\n", "/creds/stripe-webhook-secrets": "whsec_a\nwhsec_b\n"])
        #expect(configuration.stripeSecretKey.value == "sk_test_fromfile")
        #expect(configuration.stripeWebhookSecrets.map(\.value) == ["whsec_a", "whsec_b"])
        #expect("\(configuration.stripeSecretKey)" == "<redacted>")
    }
}
