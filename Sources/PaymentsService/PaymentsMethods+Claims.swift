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
    func releaseClaim(_ ref: ClaimRef, _ context: CallContext) async throws -> Claim {
        try await self.store.write { db in
            let now = self.now()
            let reply = Claim(try ClaimLedger.releaseTaken(db, key: ref.key, now: now))
            try context.recorder?.save(db, payload: reply.serialized(), now: now)
            return reply
        }
    }

    static func validateClaimRef(_ ref: ClaimRef) throws -> ClaimRef {
        try Field.identifier(ref.key, "key")
        return ref
    }
}
