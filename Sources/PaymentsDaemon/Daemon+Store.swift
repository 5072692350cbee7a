import Logging
import PaymentsStore

#if canImport(Glibc)
import Glibc
#endif

extension Daemon {
    /// Start-up stopped with this exit status, its reason already printed.
    struct Exit: Error {
        let status: Int32
    }

    /// Takes the SQLite file's lock, so a second paymentsd on the same file stops; nil for
    /// PostgreSQL, which is shared by the paymentsd of several hosts by design.
    static func lockDatabase(_ configuration: DaemonConfiguration) throws(Exit) -> DatabaseLock? {
        guard configuration.postgres == nil else { return nil }
        do {
            return try DatabaseLock(databasePath: configuration.databasePath)
        } catch {
            switch error {
            case .heldByAnother:
                Self.printError(
                    "PAYMENTSD_DB: another paymentsd is serving \(configuration.databasePath); this one stops (exit status 75)")
                throw Exit(status: ExitStatus.databaseInUse)
            case .cannotOpen(let code):
                Self.printError(
                    "PAYMENTSD_DB: cannot open the lock file \(configuration.databasePath).lock: \(String(cString: strerror(code)))")
                throw Exit(status: ExitStatus.config)
            }
        }
    }

    /// Opens and migrates the store PAYMENTSD_DB names.
    static func openStore(_ configuration: DaemonConfiguration, logger: Logger) throws(Exit) -> Store {
        let onConditionChange: @Sendable (StorageTrouble?) -> Void = { trouble in
            // Once per episode: every write in it answers the same reason to its caller.
            if let trouble {
                logger.error("the database cannot take writes", metadata: ["condition": "\(trouble)"])
            } else {
                logger.notice("the database takes writes again")
            }
        }
        if let postgres = configuration.postgres {
            do {
                return try Store(postgres: postgres, onConditionChange: onConditionChange)
            } catch let error as StoreError {
                Self.printError("PAYMENTSD_DB: \(postgres.redactedURI): \(error)")
                throw Exit(status: ExitStatus.config)
            } catch let error as PostgresError {
                // A server still starting, a network away: a restart later may find it (exit 1, restarted).
                Self.printError("PAYMENTSD_DB: cannot use \(postgres.redactedURI): \(error.message)")
                throw Exit(status: ExitStatus.failure)
            } catch {
                Self.printError("PAYMENTSD_DB: cannot use \(postgres.redactedURI): \(error)")
                throw Exit(status: ExitStatus.failure)
            }
        }
        do {
            return try Store(
                path: configuration.databasePath, busyTimeoutMS: configuration.busyTimeoutMS,
                onConditionChange: onConditionChange)
        } catch let error as SQLiteError where error.code == .notADatabase {
            Self.printError("PAYMENTSD_DB: \(configuration.databasePath) is not an SQLite database")
            throw Exit(status: ExitStatus.config)
        } catch let error as StoreError {
            // A newer schema or a refused pragma: restarting the same binary cannot fix it.
            Self.printError("PAYMENTSD_DB: \(configuration.databasePath): \(error)")
            throw Exit(status: ExitStatus.config)
        } catch let error as SQLiteError {
            // A damaged file, a file system SQLite cannot lock: a restart finds the same file.
            Self.printError("PAYMENTSD_DB: cannot open \(configuration.databasePath): \(error.message) (\(error.code))")
            throw Exit(status: ExitStatus.config)
        } catch {
            logger.critical(
                "cannot open the database", metadata: ["path": "\(configuration.databasePath)", "error": "\(error)"])
            throw Exit(status: ExitStatus.failure)
        }
    }
}
