import PaymentsRPC
import PaymentsStore

/// Storage conditions become the reasons callers retry on (protocol.md section 4, last row).
extension StorageTrouble: RPCErrorConvertible {
    public var rpcError: RPCError {
        switch self {
        case .busy:
            RPCError(
                .unavailable, "database_busy",
                "another process holds the database's write lock; retry with the same idempotency key")
        case .full:
            RPCError(.unavailable, "database_full", "the database's disk is full; retry with the same idempotency key")
        case .readOnly:
            RPCError(
                .unavailable, "database_read_only",
                "the database can no longer be written; retry with the same idempotency key")
        case .unavailable(let detail):
            RPCError(
                .unavailable, "database_unavailable",
                "the database cannot take writes (\(detail)); retry with the same idempotency key once it is back")
        case .deadlinePassed:
            RPCError.deadlineExceeded
        case .unreachable(let detail):
            RPCError(
                .unavailable, "database_unreachable",
                "PostgreSQL cannot be reached (\(detail)); retry with the same idempotency key once it is back")
        }
    }
}
