/// Where the HTTP endpoint listens (`PAYMENTSD_HTTP_LISTEN`, protocol.md section 8).
public enum HTTPListener: Sendable, Equatable, CustomStringConvertible {
    /// A loopback address and a port: `127.0.0.1:PORT` (any of 127.0.0.0/8) or `[::1]:PORT`. Port 0
    /// takes a free one.
    case tcp(host: String, port: Int)
    /// A Unix socket for a reverse proxy on the host: `unix:/path`.
    case unix(path: String)
    /// A listening socket inherited from systemd (`paymentsd-http.socket`).
    case inherited(descriptor: Int32)

    /// The longest Unix socket path a socket address holds on Linux.
    static let maxUnixPathBytes = 107

    /// Parses `PAYMENTSD_HTTP_LISTEN`; nil when it is none of the three forms.
    ///
    /// Only loopback literals: `/metrics` answers anyone who reaches it, so the endpoint is for this
    /// host (Prometheus, a TLS-terminating reverse proxy), never the network; and a name would make
    /// the address depend on the resolver at start-up.
    public static func parse(_ text: String) -> HTTPListener? {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/"), path.utf8.count <= Self.maxUnixPathBytes, !path.utf8.contains(0) else { return nil }
            return .unix(path: path)
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard host == "::1" else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard Self.isIPv4Literal(host), host.hasPrefix("127.") else { return nil }
        }
        guard portText.allSatisfy(\.isASCII), let port = Int(portText), (0...65535).contains(port) else { return nil }
        return .tcp(host: String(host), port: port)
    }

    private static func isIPv4Literal(_ text: Substring) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { part in
                !part.isEmpty && part.count <= 3 && part.allSatisfy { $0.isASCII && $0.isNumber } && Int(part)! <= 255
            }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): "unix:\(path)"
        case .inherited(let descriptor): "inherited fd \(descriptor)"
        }
    }
}
