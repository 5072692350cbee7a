/// Why a client call did not get an answer.
public enum PaymentsClientError: Error, Sendable, Equatable, CustomStringConvertible {
    case connect(path: String, errno: Int32)
    case io(errno: Int32)
    case closedByServer
    case frameTooLarge(Int)
    case undecodableResponse

    public var description: String {
        switch self {
        case .connect(let path, let errno): "cannot connect to \(path): \(String(cString: strerror(errno)))"
        case .io(let errno): "socket error: \(String(cString: strerror(errno)))"
        case .closedByServer: "the daemon closed the connection"
        case .frameTooLarge(let size): "the daemon sent a frame of \(size) bytes"
        case .undecodableResponse: "the daemon's answer is not a payments.v1.Response"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
