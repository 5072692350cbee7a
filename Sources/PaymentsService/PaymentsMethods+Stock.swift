import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `SetStock` (admin): the effect and its idempotent answer commit together.
    func setStock(_ payload: [UInt8], _ context: CallContext) async throws -> [UInt8] {
        let update: StockUpdate
        do { update = try StockUpdate(serialized: payload) } catch { throw RPCError.malformedPayload }
        try Field.identifier(update.sku, "sku")
        try Field.check(update.onHand >= 0, "on_hand", "on_hand must not be negative")
        let now = self.now()
        return try await self.idempotency.run(payload, context) { recorder in
            let reply = try await self.store.write { db in
                let reply = Stock(try StockLedger.set(db, sku: update.sku, onHand: update.onHand, now: now)).serialized()
                try recorder?.save(db, payload: reply, now: now)
                return reply
            }
            CrashPoints.reach("set_stock.committed")
            return reply
        }
    }

    /// `AdjustStock` (admin): adds or takes stock on hand, never below what is reserved.
    func adjustStock(_ payload: [UInt8], _ context: CallContext) async throws -> [UInt8] {
        let adjustment: StockAdjustment
        do { adjustment = try StockAdjustment(serialized: payload) } catch { throw RPCError.malformedPayload }
        try Field.identifier(adjustment.sku, "sku")
        let now = self.now()
        return try await self.idempotency.run(payload, context) { recorder in
            let reply = try await self.store.write { db in
                let level = try StockLedger.adjust(db, sku: adjustment.sku, delta: adjustment.delta, now: now)
                let reply = Stock(level).serialized()
                try recorder?.save(db, payload: reply, now: now)
                return reply
            }
            CrashPoints.reach("adjust_stock.committed")
            return reply
        }
    }

    /// `GetStock`.
    func getStock(_ ref: StockRef) async throws -> Stock {
        try Field.identifier(ref.sku, "sku")
        guard let level = try await self.store.read({ try StockLedger.get($0, sku: ref.sku) }) else {
            throw PaymentsError.skuNotFound(ref.sku)
        }
        return Stock(level)
    }
}
