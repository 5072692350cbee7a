import NIOCore
import PaymentsWire

/// What the frame decoder hands to a connection: a frame body, or the
/// connection-level error that ends the connection (protocol.md section 3).
enum InboundFrame: Sendable {
    case body([UInt8])
    case invalid(Status)
}

/// Splits the byte stream into frames: a 4-byte big-endian length, then the body.
///
/// The length is checked against `maxFrame` as soon as its 4 bytes arrive,
/// before any of the body is read or buffered, so an oversized frame costs
/// the daemon nothing. After a bad length the rest of the stream is
/// discarded: the connection answers once and closes. A frame cut off by EOF
/// is dropped (nobody to answer); frames complete before it still arrive.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = InboundFrame

    let maxFrame: Int
    private var failed = false

    init(maxFrame: Int) {
        self.maxFrame = maxFrame
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard !self.failed else {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return .needMoreData
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return .needMoreData
        }
        if let error = self.lengthError(Int(length)) {
            self.failed = true
            buffer.moveReaderIndex(to: buffer.writerIndex)
            context.fireChannelRead(Self.wrapInboundOut(.invalid(error)))
            return .needMoreData
        }
        guard buffer.readableBytes >= Frame.headerSize + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        let body = buffer.readBytes(length: Int(length))!
        context.fireChannelRead(Self.wrapInboundOut(.body(body)))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        while try self.decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }

    private func lengthError(_ length: Int) -> Status? {
        if length == 0 {
            return Status(code: .invalidArgument, reason: "empty_frame", message: "a frame must hold at least 1 byte")
        }
        if length > self.maxFrame {
            return Status(
                code: .resourceExhausted, reason: "frame_too_large",
                message: "a frame of \(length) bytes is larger than the limit of \(self.maxFrame)")
        }
        return nil
    }
}
