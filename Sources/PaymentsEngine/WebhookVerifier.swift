import CCrypto

/// Verifies a `Stripe-Signature` header before the body is parsed (guarantee 10).
///
/// The header is `t=<unix time>,v1=<hex>[,v1=<hex>...]`; a signature is
/// HMAC-SHA256 of `"<t>.<raw body>"` with a webhook secret. Any `v1` entry
/// matching any configured secret (several during rotation) passes, compared
/// in constant time; the timestamp must be within the tolerance of now.
public struct WebhookVerifier: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case badSignature
        case timestampOutsideTolerance
    }

    private let secrets: [[UInt8]]
    public let tolerance: Int64

    public init(secrets: [String], tolerance: Int64 = 300) {
        self.secrets = secrets.map { Array($0.utf8) }
        self.tolerance = tolerance
    }

    public func verify(payload: [UInt8], header: String, now: Int64) throws(Failure) {
        var timestamp: Int64?
        var signatures: [[UInt8]] = []
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces() }
            guard pair.count == 2 else { continue }
            switch pair[0] {
            case "t": timestamp = Int64(pair[1])
            case "v1": if let bytes = Self.hexBytes(pair[1]), bytes.count == 32 { signatures.append(bytes) }
            default: continue  // v0 and future schemes are not trusted
            }
        }
        guard let timestamp, !signatures.isEmpty else { throw .badSignature }
        var signed = Array(String(timestamp).utf8)
        signed.append(UInt8(ascii: "."))
        signed.append(contentsOf: payload)
        let matches = self.secrets.contains { secret in
            let expected = Self.hmacSHA256(key: secret, data: signed)
            return signatures.contains { Self.constantTimeEqual($0, expected) }
        }
        guard matches else { throw .badSignature }
        // Checked after the signature, so an attacker learns nothing from the timestamp answer.
        guard abs(now - timestamp) <= self.tolerance else { throw .timestampOutsideTolerance }
    }

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        key.withUnsafeBufferPointer { key in
            data.withUnsafeBufferPointer { data in
                _ = HMAC(EVP_sha256(), key.baseAddress, Int32(key.count), data.baseAddress, data.count, &digest, &length)
            }
        }
        return digest
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return CRYPTO_memcmp(a, b, a.count) == 0
    }

    static func hexBytes(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        let start = self.firstIndex(where: { $0 != " " }) ?? self.endIndex
        let end = self.lastIndex(where: { $0 != " " }).map { self.index(after: $0) } ?? start
        return self[start..<Swift.max(start, end)]
    }
}
