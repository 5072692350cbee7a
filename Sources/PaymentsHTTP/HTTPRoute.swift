import NIOHTTP1

/// What a request asks for, from its method and path alone: the endpoint's whole surface.
///
/// Nothing else of the API is reachable over HTTP: callers use the Unix socket, where the kernel
/// says who they are (protocol.md section 6).
enum HTTPRoute: Equatable {
    /// `POST /stripe/webhook`: a delivery from Stripe.
    case webhook
    /// `GET /metrics`: Prometheus' scrape.
    case metrics
    /// `GET /healthz`.
    case health
    /// A known path asked with another method; `allow` lists the one it takes.
    case methodNotAllowed(allow: String)
    case notFound

    init(method: HTTPMethod, uri: String) {
        // The query string plays no part: a scraper may add one.
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
        switch path {
        case "/stripe/webhook":
            self = method == .POST ? .webhook : .methodNotAllowed(allow: "POST")
        case "/metrics":
            self = method == .GET || method == .HEAD ? .metrics : .methodNotAllowed(allow: "GET, HEAD")
        case "/healthz":
            self = method == .GET || method == .HEAD ? .health : .methodNotAllowed(allow: "GET, HEAD")
        default:
            self = .notFound
        }
    }

    /// Whether the request's body is wanted; any other body is read and dropped.
    var takesBody: Bool {
        switch self {
        case .webhook: true
        case .metrics, .health, .methodNotAllowed, .notFound: false
        }
    }
}
