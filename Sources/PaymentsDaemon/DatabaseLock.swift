#if canImport(Glibc)
import Glibc
#endif

/// One daemon per database: an exclusive `flock` on `<database>.lock`, held for the life of the
/// process and released by the kernel when it ends, however it ends.
///
/// Two daemons on one SQLite file would each take the other's checkouts for unwanted ones and
/// expire them at Stripe. A separate file is locked, not the database: closing any descriptor of
/// the database would drop the POSIX locks SQLite holds on it.
final class DatabaseLock {
    enum Failure: Error {
        /// Another process holds the lock: another paymentsd serves this database.
        case heldByAnother
        /// The lock file cannot be opened (errno).
        case cannotOpen(Int32)
    }

    private let descriptor: Int32

    init(databasePath: String) throws(Failure) {
        let descriptor = open(databasePath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw .cannotOpen(errno) }
        var result: Int32
        repeat { result = flock(descriptor, LOCK_EX | LOCK_NB) } while result != 0 && errno == EINTR
        guard result == 0 else {
            let error = errno
            close(descriptor)
            throw error == EWOULDBLOCK ? .heldByAnother : .cannotOpen(error)
        }
        self.descriptor = descriptor
    }

    deinit { close(self.descriptor) }
}

@available(*, unavailable)
extension DatabaseLock: Sendable {}
