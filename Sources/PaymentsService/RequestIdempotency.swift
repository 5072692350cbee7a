import CCrypto
import PaymentsDomain
import PaymentsEngine
import PaymentsRPC
import PaymentsStore
import PaymentsWire

#if canImport(Glibc)
import Glibc
#endif

extension CallContext {
    /// Where the handler of a call under an idempotency key stores its answer; nil without a key.
    var recorder: RequestIdempotency.Recorder? { self.idempotentCall.map(RequestIdempotency.Recorder.init) }
}

/// Request idempotency (protocol.md section 5), a stage of the dispatcher: per caller uid and key,
/// the hash of method and payload and the final response, for 24 hours.
///
/// A second call with the key waits for the first (one lock per caller and
/// key), then answers from the stored response without doing anything again;
/// the same key with another method or payload is `idempotency_key_reused`.
/// Only final answers are stored. A retryable one (`stripe_unavailable`, a
/// deadline) records the key as taken by this method and payload without an
/// answer: the retry does the work (and finds what the first call started),
/// while another method or payload under the key is refused.
final class RequestIdempotency: ServerInterceptor {
    static let retention: Int64 = 24 * 3600

    private let store: Store
    private let locks: KeyedLockTable<String>
    private let now: @Sendable () -> Int64

    init(store: Store, locks: KeyedLockTable<String>, now: @escaping @Sendable () -> Int64) {
        self.store = store
        self.locks = locks
        self.now = now
    }

    /// Where a handler writes its response in the transaction of its effect, so that the
    /// effect and its stored answer are committed together.
    struct Recorder: Sendable {
        let callerUID: UInt32
        let key: String
        let hash: [UInt8]

        init(_ call: IdempotentCall) {
            self.callerUID = call.callerUID
            self.key = call.key
            self.hash = call.requestHash
        }

        func save(_ db: any Connection, _ response: ResponseEnvelope, now: Int64) throws {
            try IdempotencyKeys.save(
                db, callerUID: self.callerUID, key: self.key, requestHash: self.hash, response: response.serialized(),
                now: now)
        }

        func save(_ db: any Connection, payload: [UInt8], now: Int64) throws {
            try self.save(db, ResponseEnvelope(requestID: 0, status: .ok, payload: payload), now: now)
        }

        /// The engine's hook for this call's answer, stored in the transaction of the operation's
        /// last step: `reply` encodes the engine's result as the method's response; a refusal that
        /// ends the call is stored as its status, one a retry may not get again is not stored.
        func answer<Value>(_ reply: @escaping @Sendable (Value) -> [UInt8]) -> AnswerRecorder<Value> {
            AnswerRecorder(
                success: { db, value, now in try self.save(db, payload: reply(value), now: now) },
                failure: { db, error, now in
                    let status = error.rpcError.status
                    guard RequestIdempotency.isFinal(status.code) else { return }
                    try self.save(db, ResponseEnvelope(requestID: 0, status: status), now: now)
                })
        }
    }

    /// Runs a call of a method that `usesIdempotencyKey` once per caller and key; the handler finds
    /// the call in `context.idempotentCall` and hands it to the engine, which stores the answer with
    /// the effect. Calls without a key, and other methods, pass through.
    func intercept(
        payload: [UInt8], context: CallContext, next: @Sendable (CallContext) async throws -> [UInt8]
    ) async throws -> [UInt8] {
        guard context.method.usesIdempotencyKey, let key = context.idempotencyKey else { return try await next(context) }
        let call = IdempotentCall(
            callerUID: context.peer.uid, key: key, requestHash: Self.hash(context.method.fullName, payload))
        let recorder = Recorder(call)
        do {
            return try await self.locks.withLock("idempotency:\(context.peer.uid):\(key)", deadline: context.deadline) {
                if let stored = try await self.stored(recorder) {
                    guard stored.hash == recorder.hash else { throw PaymentsError.idempotencyKeyReused }
                    if let response = stored.response {
                        guard response.status.code == .ok else {
                            let status = response.status
                            throw RPCError(status.code, status.reason, status.message, details: status.details)
                        }
                        return response.payload
                    }
                    // Taken by an earlier call that got no final answer: this retry does the work.
                }
                do {
                    let payload = try await next(context.admitted(as: call))
                    try await self.saveUnlessSaved(recorder, ResponseEnvelope(requestID: 0, status: .ok, payload: payload))
                    return payload
                } catch PaymentsError.idempotencyKeyReused {
                    // About another payload under this key: its answer is not this key's.
                    throw PaymentsError.idempotencyKeyReused
                } catch let error as PaymentsError where Self.isFinal(error.rpcError.code) {
                    try await self.saveUnlessSaved(recorder, ResponseEnvelope(requestID: 0, status: error.rpcError.status))
                    throw error
                } catch let error as StorageTrouble {
                    // The database cannot take the mark either; the retry finds the key free.
                    throw error
                } catch {
                    // The call's own error matters more than a failure to mark the key.
                    try? await self.markTaken(recorder)
                    throw error
                }
            }
        } catch is LockTimeout {
            throw PaymentsError.lockTimeout
        }
    }

    /// Answers that a retry would get again; everything else may change and is not stored.
    static func isFinal(_ code: StatusCode) -> Bool {
        switch code {
        case .ok, .invalidArgument, .notFound, .alreadyExists, .failedPrecondition, .outOfRange: true
        case .cancelled, .unknown, .deadlineExceeded, .permissionDenied, .resourceExhausted, .aborted, .unimplemented,
            .internal, .unavailable, .dataLoss, .unauthenticated:
            false
        }
    }

    /// The key's row: its request hash, and its answer unless no call has had a final one yet.
    private func stored(_ recorder: Recorder) async throws -> (hash: [UInt8], response: ResponseEnvelope?)? {
        let cutoff = self.now() - Self.retention
        return try await self.store.read { db in
            guard let entry = try IdempotencyKeys.find(db, callerUID: recorder.callerUID, key: recorder.key, since: cutoff)
            else { return nil }
            return (entry.requestHash, entry.response.isEmpty ? nil : try ResponseEnvelope(serialized: entry.response))
        }
    }

    /// Records the key as taken by this method and payload, with no answer yet (an empty response).
    private func markTaken(_ recorder: Recorder) async throws {
        let now = self.now()
        try await self.store.write { db in
            try IdempotencyKeys.markTaken(
                db, callerUID: recorder.callerUID, key: recorder.key, requestHash: recorder.hash, now: now)
        }
    }

    private func saveUnlessSaved(_ recorder: Recorder, _ response: ResponseEnvelope) async throws {
        let now = self.now()
        try await self.store.write { db in
            // A handler that saved inside its own transaction already did; never overwrite that answer
            // (a key only taken, with no answer yet, gets this one).
            let existing = try IdempotencyKeys.find(
                db, callerUID: recorder.callerUID, key: recorder.key, since: now - Self.retention)
            if existing?.response.isEmpty ?? true { try recorder.save(db, response, now: now) }
            try IdempotencyKeys.purge(db, before: now - Self.retention)
        }
    }

    static func hash(_ method: String, _ payload: [UInt8]) -> [UInt8] {
        var input = Array(method.utf8)
        input.append(0)
        input.append(contentsOf: payload)
        var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        input.withUnsafeBufferPointer { buffer in _ = SHA256(buffer.baseAddress, buffer.count, &digest) }
        return digest
    }
}
