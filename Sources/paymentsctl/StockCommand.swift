import ArgumentParser
import PaymentsWire

struct StockCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stock", abstract: "Read or change stock (GetStock, SetStock, AdjustStock).",
        subcommands: [Get.self, Set.self, Adjust.self])

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stock of a SKU.")
        @OptionGroup var options: CallOptions
        @Argument var sku: String

        func run() throws {
            try CallRunner.run(
                .getStock, request: StockRef(sku: self.sku), options: self.options, as: Stock.self,
                output: StockOutput.init, human: StockOutput.line)
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set stock on hand (admin).")
        @OptionGroup var options: CallOptions
        @Argument var sku: String
        @Argument(help: "Units on hand.") var onHand: Int64
        @Option(name: .customLong("idempotency-key")) var idempotencyKey = ""

        func run() throws {
            try CallRunner.run(
                .setStock, request: StockUpdate(sku: self.sku, onHand: self.onHand), options: self.options,
                idempotencyKey: self.idempotencyKey, as: Stock.self, output: StockOutput.init, human: StockOutput.line)
        }
    }

    struct Adjust: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add to (or take from) stock on hand (admin).")
        @OptionGroup var options: CallOptions
        @Argument var sku: String
        @Argument(help: "Units to add; negative to take.") var delta: Int64
        @Option(name: .customLong("idempotency-key")) var idempotencyKey = ""

        func run() throws {
            try CallRunner.run(
                .adjustStock, request: StockAdjustment(sku: self.sku, delta: self.delta), options: self.options,
                idempotencyKey: self.idempotencyKey, as: Stock.self, output: StockOutput.init, human: StockOutput.line)
        }
    }
}
