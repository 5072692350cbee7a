import Testing

@testable import PaymentsDaemon

#if canImport(Glibc)
import Glibc
#endif

/// The sockets systemd passes, told apart by their names.
@Suite struct SocketActivationTests {
    private func listeners(count: Int, names: String?) -> SocketActivation.Listeners {
        var environment = ["LISTEN_PID": "\(getpid())", "LISTEN_FDS": "\(count)"]
        environment["LISTEN_FDNAMES"] = names
        return SocketActivation.inheritedListeners(environment: environment)
    }

    @Test func namedSockets_areToldApart_inEitherOrder() {
        #expect(self.listeners(count: 2, names: "rpc:http") == .init(rpc: 3, http: 4))
        #expect(self.listeners(count: 2, names: "http:rpc") == .init(rpc: 4, http: 3))
        #expect(self.listeners(count: 2, names: "paymentsd-http.socket:paymentsd.socket") == .init(rpc: 4, http: 3))
    }

    @Test func oneSocket_isTheRPCSocket_andTheEndpointIsOff() {
        #expect(self.listeners(count: 1, names: nil) == .init(rpc: 3, http: nil))
        #expect(self.listeners(count: 1, names: "paymentsd.socket") == .init(rpc: 3, http: nil))
        #expect(self.listeners(count: 1, names: "http") == .init(rpc: nil, http: 3))
    }

    @Test func socketsForAnotherProcess_areNotTaken() {
        let environment = ["LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "rpc:http"]
        #expect(SocketActivation.inheritedListeners(environment: environment) == .init())
    }
}
