import PaymentsWire

#if canImport(Glibc)
import Glibc
#endif

/// A blocking client connection to paymentsd, for the CLI and the benchmark.
///
/// One call at a time with `call`, or many in flight with `send` and `receive`.
/// Not thread-safe: use one connection per thread.
public final class PaymentsConnection {
    private let fd: Int32
    private var nextRequestID: UInt64 = 1
    private var buffer: [UInt8] = []
    /// Where `recv` writes, allocated once: zeroing 64 KiB for every frame read cost more than the
    /// frame (a third of a Health round trip's client time in the bench's profile).
    private var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    private static let maxResponseFrame = 64 << 20

    /// Connects to the daemon's socket at `path`.
    public init(path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw PaymentsClientError.io(errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw PaymentsClientError.connect(path: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            let error = errno
            close(fd)
            throw PaymentsClientError.connect(path: path, errno: error)
        }
        self.fd = fd
    }

    deinit { close(self.fd) }

    /// Sends one request and waits for its response.
    public func call(
        _ method: MethodName, payload: [UInt8], timeoutMS: UInt32 = 0, idempotencyKey: String = ""
    ) throws -> ResponseEnvelope {
        let id = try self.send(method, payload: payload, timeoutMS: timeoutMS, idempotencyKey: idempotencyKey)
        while true {
            let response = try self.receive()
            if response.requestID == id || response.requestID == 0 { return response }
        }
    }

    /// Sends one request without waiting; returns its request id.
    @discardableResult
    public func send(
        _ method: MethodName, payload: [UInt8], timeoutMS: UInt32 = 0, idempotencyKey: String = ""
    ) throws -> UInt64 {
        let id = self.nextRequestID
        self.nextRequestID += 1
        let request = RequestEnvelope(
            requestID: id, method: method.fullName, payload: payload, timeoutMS: timeoutMS,
            idempotencyKey: idempotencyKey)
        try self.write(Frame.encode(request.serialized()))
        return id
    }

    /// Writes bytes as they are, framed or not (benchmarks and tests).
    public func write(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EINTR { continue }
                throw PaymentsClientError.io(errno: errno)
            }
            offset += written
        }
    }

    /// Reads the next response frame.
    public func receive() throws -> ResponseEnvelope {
        guard let body = try self.receiveFrame() else { throw PaymentsClientError.closedByServer }
        guard let response = try? ResponseEnvelope(serialized: body) else {
            throw PaymentsClientError.undecodableResponse
        }
        return response
    }

    /// Reads the next frame body; nil at a clean end of stream.
    public func receiveFrame() throws -> [UInt8]? {
        guard try self.fill(Frame.headerSize) else { return nil }
        let length = Frame.length(header: self.buffer[0..<Frame.headerSize])
        guard length <= Self.maxResponseFrame else { throw PaymentsClientError.frameTooLarge(length) }
        guard try self.fill(Frame.headerSize + length) else { throw PaymentsClientError.closedByServer }
        let body = Array(self.buffer[Frame.headerSize..<(Frame.headerSize + length)])
        self.buffer.removeFirst(Frame.headerSize + length)
        return body
    }

    /// Reads until `count` bytes are buffered; false if the stream ended first with nothing buffered.
    private func fill(_ count: Int) throws -> Bool {
        while self.buffer.count < count {
            let read = self.chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
            if read < 0 {
                if errno == EINTR { continue }
                throw PaymentsClientError.io(errno: errno)
            }
            if read == 0 {
                if self.buffer.isEmpty { return false }
                throw PaymentsClientError.closedByServer
            }
            self.buffer.append(contentsOf: self.chunk[0..<read])
        }
        return true
    }
}

@available(*, unavailable)
extension PaymentsConnection: Sendable {}
