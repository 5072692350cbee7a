import PaymentsEngine
import Testing

@Suite struct WebhookVerifierTests {
    static let body = Array(#"{"id":"evt_1","type":"checkout.session.completed"}"#.utf8)
    static let now: Int64 = 1_800_000_000

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    private func sign(_ secret: String, _ timestamp: Int64, _ body: [UInt8] = WebhookVerifierTests.body) -> String {
        hex(WebhookVerifier.hmacSHA256(key: Array(secret.utf8), data: Array("\(timestamp).".utf8) + body))
    }

    @Test func hmac_matchesRFC4231Case2() {
        let digest = WebhookVerifier.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))
        #expect(hex(digest) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func aCorrectSignature_passes_withAnyV1Entry_andAnySecret() throws {
        let verifier = WebhookVerifier(secrets: ["whsec_old", "whsec_new"])
        let t = Self.now - 10
        try verifier.verify(payload: Self.body, header: "t=\(t),v1=\(sign("whsec_new", t))", now: Self.now)
        try verifier.verify(
            payload: Self.body, header: "t=\(t),v1=\(String(repeating: "0", count: 64)),v1=\(sign("whsec_old", t)),v0=zz",
            now: Self.now)
    }

    @Test func wrongSecret_tamperedBody_missingParts_areBadSignatures() {
        let verifier = WebhookVerifier(secrets: ["whsec_right"])
        let t = Self.now
        var tampered = Self.body
        tampered[3] ^= 1
        let cases: [([UInt8], String)] = [
            (Self.body, "t=\(t),v1=\(sign("whsec_wrong", t))"),
            (tampered, "t=\(t),v1=\(sign("whsec_right", t))"),
            (Self.body, ""),
            (Self.body, "v1=\(sign("whsec_right", t))"),
            (Self.body, "t=\(t)"),
            (Self.body, "t=\(t),v0=\(sign("whsec_right", t))"),
            (Self.body, "t=\(t + 1),v1=\(sign("whsec_right", t))"),
        ]
        for (body, header) in cases {
            #expect(throws: WebhookVerifier.Failure.badSignature) {
                try verifier.verify(payload: body, header: header, now: Self.now)
            }
        }
    }

    @Test func staleOrFutureTimestamps_areOutsideTolerance() {
        let verifier = WebhookVerifier(secrets: ["whsec_right"])
        for t in [Self.now - 301, Self.now + 301] {
            #expect(throws: WebhookVerifier.Failure.timestampOutsideTolerance) {
                try verifier.verify(payload: Self.body, header: "t=\(t),v1=\(sign("whsec_right", t))", now: Self.now)
            }
        }
    }
}
