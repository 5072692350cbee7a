import NIOHTTP1

/// One HTTP answer, before it is framed.
struct HTTPAnswer: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: [UInt8]
    var extraHeaders: [(String, String)] = []

    static func text(_ status: HTTPResponseStatus, _ text: String) -> HTTPAnswer {
        HTTPAnswer(status: status, contentType: "text/plain; charset=utf-8", body: Array(text.utf8))
    }

    /// A JSON object of string fields, for the webhook's answers (Stripe shows them in its dashboard).
    static func json(_ status: HTTPResponseStatus, _ fields: KeyValuePairs<String, String>) -> HTTPAnswer {
        let members = fields.map { "\"\(Self.escape($0.key))\":\"\(Self.escape($0.value))\"" }
        return HTTPAnswer(
            status: status, contentType: "application/json", body: Array(("{" + members.joined(separator: ",") + "}\n").utf8))
    }

    private static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
