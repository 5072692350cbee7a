import PaymentsClient
import PaymentsRPC
import PaymentsTesting
import PaymentsWire
import ServiceLifecycle
import Testing

@Suite struct RPCServerTests {
    static let reply = HealthReply(status: .serving, version: "t", uptimeSeconds: 0, pendingOperations: 0)

    private func table(_ health: @escaping @Sendable (HealthRequest, CallContext) async throws -> HealthReply) -> MethodTable {
        var table = MethodTable()
        table.register(.health, HealthRequest.self, health)
        return table
    }

    private static func request(_ id: UInt64) -> [UInt8] {
        Frame.encode(RequestEnvelope(requestID: id, method: MethodName.health.fullName).serialized())
    }

    @Test func pipelinedRequests_allAnswered_andInFlightStaysWithinTheBound() async throws {
        let running = Shared((now: 0, most: 0))
        let table = self.table { _, _ in
            running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            try await Task.sleep(for: .milliseconds(2))
            running.withLock { $0.now -= 1 }
            return Self.reply
        }
        try await InProcessServer.with(table: table, maxInFlight: 8) { socket, _ in
            let seen = try await blocking {
                let connection = try PaymentsConnection(path: socket)
                // Everything written before anything is read: the server must pause, not drop.
                try connection.write(Array((1...300).map { Self.request(UInt64($0)) }.joined()))
                var seen: [UInt64: Int] = [:]
                for _ in 1...300 {
                    let response = try connection.receive()
                    #expect(response.status == .ok)
                    seen[response.requestID, default: 0] += 1
                }
                return seen
            }
            #expect(Set(seen.keys) == Set(1...300))
            #expect(seen.values.allSatisfy { $0 == 1 })
        }
        #expect(running.value.most <= 8)
        #expect(running.value.most > 1)  // requests did run concurrently
    }

    @Test func answersComeOutOfOrder_whenALaterRequestIsFaster() async throws {
        let table = self.table { _, context in
            if context.requestID == 1 { try await Task.sleep(for: .milliseconds(300)) }
            return Self.reply
        }
        try await InProcessServer.with(table: table) { socket, _ in
            let order = try await blocking {
                let connection = try PaymentsConnection(path: socket)
                try connection.write(Self.request(1) + Self.request(2))
                return [try connection.receive().requestID, try connection.receive().requestID]
            }
            #expect(order == [2, 1])
        }
    }

    @Test(arguments: [
        ([0, 0, 0, 0] as [UInt8], StatusCode.invalidArgument, "empty_frame"),
        // Only the header of a 2 MiB frame: the answer must not wait for the body.
        ([0, 0x20, 0, 0] as [UInt8], StatusCode.resourceExhausted, "frame_too_large"),
        (Frame.encode([0xFF, 0xFF, 0xFF]), StatusCode.invalidArgument, "malformed_envelope"),
    ])
    func badFrames_answerWithRequestIDZero_thenClose(bytes: [UInt8], code: StatusCode, reason: String) async throws {
        try await InProcessServer.with(table: self.table { _, _ in Self.reply }) { socket, _ in
            let (response, closed) = try await blocking {
                let connection = try PaymentsConnection(path: socket)
                try connection.write(bytes)
                return (try connection.receive(), try connection.receiveFrame() == nil)
            }
            #expect(response.requestID == 0)
            #expect(response.status.code == code && response.status.reason == reason)
            #expect(closed)  // closed after the answer
        }
    }

    @Test func frameLimit_isConfigurable() async throws {
        try await InProcessServer.with(table: self.table { _, _ in Self.reply }, maxFrame: 16) { socket, _ in
            let response = try await blocking {
                let connection = try PaymentsConnection(path: socket)
                try connection.write(Frame.encode([UInt8](repeating: 0, count: 17)))
                return try connection.receive()
            }
            #expect(response.status.reason == "frame_too_large")
        }
    }

    @Test func gracefulShutdown_letsRequestsInFlightFinish() async throws {
        let started = Shared(0)
        let table = self.table { _, _ in
            started.withLock { $0 += 1 }
            try await Task.sleep(for: .milliseconds(500))
            return Self.reply
        }
        try await InProcessServer.with(table: table) { socket, group in
            async let client = blocking {
                let connection = try PaymentsConnection(path: socket)
                try connection.write(Array((1...5).map { Self.request(UInt64($0)) }.joined()))
                let statuses = try (1...5).map { _ in try connection.receive().status }
                return (statuses, try connection.receiveFrame() == nil)
            }
            while started.value < 5 { try await Task.sleep(for: .milliseconds(5)) }
            await group.triggerGracefulShutdown()
            let (statuses, closed) = try await client
            #expect(statuses == Array(repeating: .ok, count: 5))
            #expect(closed)
            let refused = try await blocking { (try? PaymentsConnection(path: socket)) == nil }
            #expect(refused)
        }
    }
}
