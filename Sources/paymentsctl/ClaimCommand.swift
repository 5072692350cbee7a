import ArgumentParser
import PaymentsWire

struct ClaimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "claim", abstract: "Unique names (claims) deals hold and take.",
        subcommands: [Get.self, Release.self])

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Whether a name is FREE, HELD or TAKEN (GetClaim).")
        @OptionGroup var options: CallOptions
        @Argument(help: "The claim key, e.g. slug:alice.") var key: String

        func run() throws {
            try CallRunner.run(
                .getClaim, request: ClaimRef(key: self.key), options: self.options, as: Claim.self,
                output: ClaimOutput.init, human: ClaimOutput.line)
        }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Free a TAKEN name (ReleaseClaim; root or an admin group).")
        @OptionGroup var options: CallOptions
        @Argument(help: "The claim key.") var key: String
        @Option(name: .customLong("idempotency-key")) var idempotencyKey = ""

        func run() throws {
            try CallRunner.run(
                .releaseClaim, request: ClaimRef(key: self.key), options: self.options,
                idempotencyKey: self.idempotencyKey, as: Claim.self, output: ClaimOutput.init, human: ClaimOutput.line)
        }
    }
}

struct ClaimOutput: Encodable {
    let key: String
    let state: String
    let deal_id: String
    let expires_at: Int64

    init(_ claim: Claim) {
        self.key = claim.key
        self.state = Self.name(claim.state)
        self.deal_id = claim.dealID
        self.expires_at = claim.expiresAt
    }

    static func name(_ state: ClaimState) -> String {
        switch state {
        case .unspecified: "UNSPECIFIED"
        case .free: "FREE"
        case .held: "HELD"
        case .taken: "TAKEN"
        }
    }

    static func line(_ claim: Claim) -> String {
        var text = "\(claim.key) \(Self.name(claim.state))"
        if !claim.dealID.isEmpty { text += " deal=\(claim.dealID)" }
        if claim.expiresAt > 0 { text += " expires_at=\(claim.expiresAt)" }
        return text
    }
}
