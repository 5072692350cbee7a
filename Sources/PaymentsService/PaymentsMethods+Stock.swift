import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

extension PaymentsMethods {
    /// `SetStock` (admin): the effect and its idempotent answer commit together.
    func setStock(_ update: StockUpdate, _ context: CallContext) async throws -> Stock {
        let reply = try await self.store.write { db in
            let now = self.now()
            let reply = Stock(try StockLedger.set(db, sku: update.sku, onHand: update.onHand, now: now))
            try context.recorder?.save(db, payload: reply.serialized(), now: now)
            return reply
        }
        CrashPoints.reach("set_stock.committed")
        return reply
    }

    static func validateStockUpdate(_ update: StockUpdate) throws -> StockUpdate {
        try Field.identifier(update.sku, "sku")
        try Field.check(update.onHand >= 0, "on_hand", "on_hand must not be negative")
        return update
    }

    /// `AdjustStock` (admin): adds or takes stock on hand, never below what is reserved.
    func adjustStock(_ adjustment: StockAdjustment, _ context: CallContext) async throws -> Stock {
        let reply = try await self.store.write { db in
            let now = self.now()
            let reply = Stock(try StockLedger.adjust(db, sku: adjustment.sku, delta: adjustment.delta, now: now))
            try context.recorder?.save(db, payload: reply.serialized(), now: now)
            return reply
        }
        CrashPoints.reach("adjust_stock.committed")
        return reply
    }

    static func validateStockAdjustment(_ adjustment: StockAdjustment) throws -> StockAdjustment {
        try Field.identifier(adjustment.sku, "sku")
        return adjustment
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
