import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import PaymentsEngine
import PaymentsService
import PaymentsStore
import PaymentsWire

@testable import PaymentsHTTP
@testable import PaymentsRPC
@testable import StripeClient

/// One decoder under the fuzzer: every byte that reaches paymentsd from outside passes through one
/// of these. Each target runs its input through the daemon's own code and checks what must hold
/// for any input (a round trip, a length bound); a crash, a trap or a sanitizer report is a find.
enum FuzzTarget: String, CaseIterable {
    /// The frame decoder, fed the input in chunks of sizes the input itself chooses.
    case frames
    /// `payments.v1.Request` envelopes, and re-encoding what decodes.
    case envelope
    /// Every method's payload decoding and validation (first byte: the method).
    case methods
    /// The `Stripe-Signature` header against a body (split at the first newline).
    case signature
    /// The webhook event parser.
    case event
    /// Stripe's JSON answers: session, refund, error, event list (first byte: which).
    case stripeJSON = "stripe-json"
    /// The HTTP endpoint's request decoding, limits and routing (NIOHTTP1 with the endpoint's
    /// limits, then `HTTPRoute`).
    case http

    func run(_ input: [UInt8]) {
        switch self {
        case .frames: Self.frames(input)
        case .envelope: Self.envelope(input)
        case .methods: Self.methods(input)
        case .signature: Self.signature(input)
        case .event: _ = StripeEventSummary.parse(input)
        case .stripeJSON: Self.stripeJSON(input)
        case .http: Self.http(input)
        }
    }

    private static func frames(_ input: [UInt8]) {
        guard let first = input.first else { return }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrame: 4096)))
        // The first byte sets the chunk size (1-256 bytes): the decoder must give the same frames
        // however the stream is cut.
        let chunk = Int(first) + 1
        var bodies = 0
        var offset = 1
        while offset < input.count {
            let end = min(offset + chunk, input.count)
            guard (try? channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))) != nil else { break }
            offset = end
        }
        while let frame = try? channel.readInbound(as: InboundFrame.self) {
            switch frame {
            case .body(let body):
                bodies += 4 + body.count
                _ = try? RequestEnvelope(serialized: body)
            case .invalid:
                break
            }
        }
        precondition(bodies <= input.count - 1, "the decoder produced more bytes than it was given")
        _ = try? channel.finish()
    }

    private static func envelope(_ input: [UInt8]) {
        guard let request = try? RequestEnvelope(serialized: input) else { return }
        let again = try? RequestEnvelope(serialized: request.serialized())
        precondition(again == request, "an envelope did not survive re-encoding")
    }

    private static func methods(_ input: [UInt8]) {
        guard let first = input.first else { return }
        let all = MethodName.allCases
        let method = all[Int(first) % all.count]
        guard let handler = Fixture.shared.table.handler(for: method) else { return }
        // Decoded and validated only: the call is never run, so no state changes.
        _ = try? handler(Array(input.dropFirst()))
    }

    private static func signature(_ input: [UInt8]) {
        let split = input.firstIndex(of: UInt8(ascii: "\n")) ?? input.endIndex
        let header = String(decoding: input[..<split], as: UTF8.self)
        let body = Array(input[min(split + 1, input.endIndex)...])
        guard (try? Fixture.shared.verifier.verify(payload: body, header: header, now: 1_700_000_000)) != nil else {
            return
        }
        // Accepted: then the header must hold the real HMAC of one of its timestamps and the body
        // under the fixture's secret, computed here on its own.
        let timestamps: [Substring] = header.split(whereSeparator: { !$0.isNumber }).filter { $0.count <= 19 }
        let genuine = timestamps.contains { t in
            let mac = WebhookVerifier.hmacSHA256(key: Array("whsec_fuzz".utf8), data: Array("\(t).".utf8) + body)
            let hex = mac.map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
            // Hex digits in either case name the same bytes (the verifier reads both).
            return header.lowercased().contains(hex)
        }
        precondition(genuine, "a signature was accepted without the body's HMAC: \(header)")
    }

    private static func stripeJSON(_ input: [UInt8]) {
        guard let first = input.first else { return }
        let data = Data(input.dropFirst())
        let decoder = JSONDecoder()
        switch first % 4 {
        case 0: _ = try? decoder.decode(CheckoutSession.self, from: data)
        case 1: _ = try? decoder.decode(RefundObject.self, from: data)
        case 2: _ = try? decoder.decode(StripeErrorBody.self, from: data)
        default: _ = try? decoder.decode(ListPage<StripeEventSummary>.self, from: data)
        }
    }

    private static func http(_ input: [UInt8]) {
        let channel = EmbeddedChannel()
        let configuration = HTTPServer.Configuration(listener: .tcp(host: "127.0.0.1", port: 0))
        do {
            try HTTPServer.addHTTPCodec(to: channel.pipeline.syncOperations, configuration)
            try channel.pipeline.syncOperations.addHandler(RouteRecorder(maxBody: configuration.maxBody))
        } catch {
            preconditionFailure("the pipeline could not be set up: \(error)")
        }
        _ = try? channel.writeInbound(ByteBuffer(bytes: input))
        while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
        _ = try? channel.finish()
    }
}

/// The end of the fuzzed HTTP pipeline: routes each request as the endpoint does and gathers
/// the webhook's body against its limit, then answers at once (the gateway's calls are the other
/// targets' business).
private final class RouteRecorder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let maxBody: Int
    private var route: HTTPRoute?
    private var gathered = 0

    init(maxBody: Int) { self.maxBody = maxBody }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.route = HTTPRoute(method: head.method, uri: head.uri)
            self.gathered = 0
        case .body(let part):
            // A request arrives whole or not at all: no body part without its head.
            precondition(self.route != nil, "a body part before any request head")
            self.gathered += part.readableBytes
        case .end:
            precondition(self.route != nil, "a request end before its head")
            let status: HTTPResponseStatus = self.gathered > self.maxBody ? .payloadTooLarge : .ok
            let head = HTTPResponseHead(version: .http1_1, status: status, headers: ["Content-Length": "0"])
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            self.route = nil
        }
    }
}

/// The fixture's database file, one per process.
private let fixtureDatabase = NSTemporaryDirectory() + "paymentsd-fuzz-\(getpid()).db"

/// What the targets share, made once: the daemon's method table over a store in a temporary
/// file (never written: no call is run) and a webhook verifier.
final class Fixture: Sendable {
    static let shared = Fixture()

    let table: MethodTable
    let verifier = WebhookVerifier(secrets: ["whsec_fuzz"])

    private init() {
        let path = fixtureDatabase
        guard let store = try? Store(path: path) else { preconditionFailure("no store at \(path)") }
        // Gone when the run ends (libFuzzer and the replay both end through exit).
        atexit { for suffix in ["", "-wal", "-shm"] { unlink(fixtureDatabase + suffix) } }
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        let stripe = StripeClient(configuration: .init(baseURL: "http://127.0.0.1:9", secretKey: "sk_test_fuzz"))
        let engine = Engine(store: store, stripe: stripe, logger: logger)
        self.table = PaymentsMethods(engine: engine, metrics: RequestMetrics(), verifier: self.verifier).table()
    }
}
