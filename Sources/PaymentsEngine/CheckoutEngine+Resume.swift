import PaymentsDomain
import PaymentsStore

extension CheckoutEngine {
    /// Resumes every unfinished operation that is due (all of them with `force`, as at start-up),
    /// each under its deal's lock, through the same step code as a live call. Returns how many finished.
    @discardableResult
    public func resumeUnfinished(force: Bool) async -> Int {
        let operations: [OperationLog.Record]
        do {
            operations = try await self.store.read { try OperationLog.unfinished($0, now: self.now(), force: force) }
        } catch {
            self.logger.sweepFailure(.error, "cannot list unfinished operations", error: error)
            return 0
        }
        var finished = 0
        for operation in operations {
            let deadline = ContinuousClock.now + self.configuration.resumeTimeout
            do {
                try await self.withDealLock(operation.dealID, deadline: deadline) {
                    try await self.resume(operation, deadline: deadline)
                }
                finished += 1
                self.logger.info(
                    "resumed operation", metadata: ["operation": "\(operation.id)", "from": "\(operation.recoveryPoint)"])
            } catch {
                self.logger.sweepFailure(
                    .warning, "resuming an operation failed; it stays pending",
                    error: error, metadata: ["operation": "\(operation.id)"])
            }
        }
        return finished
    }

    private func resume(_ operation: OperationLog.Record, deadline: ContinuousClock.Instant) async throws {
        switch operation.kind {
        case .createSession:
            switch (operation.recoveryPoint, operation.detail) {
            case (.expireUnwanted, let sessionID?):
                // The session to expire was recorded with the step that found it unwanted.
                try await self.expireUnwanted(paymentID: operation.paymentID, sessionID: sessionID, deadline: deadline)
            case (.expireUnwanted, nil), (.paymentRecorded, _), (.expiring, _), (.refundRecorded, _), (.done, _):
                _ = try await self.createSession(paymentID: operation.paymentID, deadline: deadline)
            }
        case .sendRefund:
            try await self.refunds.send(refundID: operation.detail ?? "", deadline: deadline)
        case .expireSession:
            do {
                try await self.expireSession(
                    paymentID: operation.paymentID, cause: operation.cause ?? .canceled, deadline: deadline)
            } catch PaymentsError.alreadyPaid, PaymentsError.checkoutInProgress {
                // Settled the other way: the operation is finished, nobody waits for an answer.
            }
        }
    }
}
