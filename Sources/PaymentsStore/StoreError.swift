/// Why the store could not be opened or used, beyond SQLite's own errors.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file was migrated by a newer paymentsd; running an older one on it could corrupt it.
    case databaseNewerThanBinary(databaseVersion: Int, supportedVersion: Int)
    /// A pragma did not take effect (e.g. WAL refused on this file system).
    case pragmaRefused(String)
    /// SQLite could open the file only for reading (a read-only mount, an immutable file).
    case readOnly

    public var description: String {
        switch self {
        case .databaseNewerThanBinary(let found, let supported):
            "the database is at schema version \(found) but this paymentsd knows versions up to \(supported); "
                + "run the newer paymentsd that wrote it, or restore a backup"
        case .pragmaRefused(let pragma):
            "SQLite refused \(pragma)"
        case .readOnly:
            "the file can only be read; paymentsd must be able to write it"
        }
    }
}
