import PaymentsWire
import Testing

@Suite struct FrameTests {
    @Test func header_isBigEndianLength() {
        let frame = Frame.encode([UInt8](repeating: 7, count: 258))
        #expect(Array(frame.prefix(4)) == [0, 0, 1, 2])
        #expect(Frame.length(header: frame.prefix(4)) == 258)
        #expect(frame.count == 262)
    }
}
