import NIOHTTP1
import Testing

@testable import PaymentsHTTP

/// `PAYMENTSD_HTTP_LISTEN`'s three forms, and what the endpoint routes.
@Suite struct HTTPListenerTests {
    @Test func theThreeForms_parse() {
        #expect(HTTPListener.parse("127.0.0.1:8080") == .tcp(host: "127.0.0.1", port: 8080))
        #expect(HTTPListener.parse("[::1]:9000") == .tcp(host: "::1", port: 9000))
        #expect(HTTPListener.parse("127.0.0.2:0") == .tcp(host: "127.0.0.2", port: 0))
        #expect(HTTPListener.parse("unix:/run/paymentsd/http.sock") == .unix(path: "/run/paymentsd/http.sock"))
    }

    @Test(arguments: [
        "localhost:8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "256.0.0.1:80", "1.2.3:80",
        "[::1]", "[::1]8080", "[zz]:80", "0.0.0.0:8080", "192.168.1.2:80", "[::]:80", "[fe80::1]:80", "::1:8080", "unix:relative/path", "unix:", "http://127.0.0.1:8080",
        "unix:/" + String(repeating: "p", count: 107),
    ])
    func anythingElse_isRefused(_ text: String) {
        #expect(HTTPListener.parse(text) == nil)
    }

    @Test func routes_byMethodAndPath() {
        #expect(HTTPRoute(method: .POST, uri: "/stripe/webhook") == .webhook)
        #expect(HTTPRoute(method: .GET, uri: "/stripe/webhook") == .methodNotAllowed(allow: "POST"))
        #expect(HTTPRoute(method: .GET, uri: "/metrics") == .metrics)
        #expect(HTTPRoute(method: .GET, uri: "/metrics?x=1") == .metrics)
        #expect(HTTPRoute(method: .HEAD, uri: "/healthz") == .health)
        #expect(HTTPRoute(method: .POST, uri: "/healthz") == .methodNotAllowed(allow: "GET, HEAD"))
        #expect(HTTPRoute(method: .GET, uri: "/") == .notFound)
        #expect(HTTPRoute(method: .GET, uri: "/stripe/webhook/") == .notFound)
        #expect(HTTPRoute(method: .POST, uri: "/v1/CreateCheckout") == .notFound)
    }

    @Test func jsonAnswers_escapeWhatTheyCarry() {
        let answer = HTTPAnswer.json(.badRequest, ["error": "bad_signature", "message": "a \"quote\"\n\\"])
        #expect(String(decoding: answer.body, as: UTF8.self) == #"{"error":"bad_signature","message":"a \"quote\"\u000a\\"}"# + "\n")
    }
}
