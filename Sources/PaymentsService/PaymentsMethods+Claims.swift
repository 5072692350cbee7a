import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `GetClaim`: whether a unique name can still be had.
    func getClaim(_ ref: ClaimRef) async throws -> Claim {
        try Field.identifier(ref.key, "key")
        return Claim(try await self.store.read { try ClaimLedger.get($0, key: ref.key) })
    }

    /// `ReleaseClaim` (admin): frees a TAKEN name, audited; idempotent by key when one is sent.
    func releaseClaim(_ payload: [UInt8], _ context: CallContext) async throws -> [UInt8] {
        let ref: ClaimRef
        do { ref = try ClaimRef(serialized: payload) } catch { throw RPCError.malformedPayload }
        try Field.identifier(ref.key, "key")
        return try await self.idempotency.run(payload, context) { recorder in
            try await self.store.write { db in
                let now = self.now()
                let reply = Claim(try ClaimLedger.releaseTaken(db, key: ref.key, now: now)).serialized()
                try recorder?.save(db, payload: reply, now: now)
                return reply
            }
        }
    }
}
