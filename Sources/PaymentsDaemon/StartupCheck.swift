#if canImport(Glibc)
import Glibc
#endif

/// File-system problems found before start-up goes any further, each one line naming the
/// variable and the path: restarting cannot fix them, so they exit 78 (EX_CONFIG).
enum StartupCheck {
    /// The first problem with the database's and the socket's paths, or nil.
    static func paths(_ configuration: DaemonConfiguration, socketActivated: Bool) -> String? {
        if configuration.postgres == nil, let problem = Self.databasePath(configuration.databasePath) { return problem }
        if !socketActivated {
            let socketDirectory = Self.directory(of: configuration.socketPath)
            if !Self.isDirectory(socketDirectory) {
                return "PAYMENTSD_SOCKET: the directory \(socketDirectory) of \(configuration.socketPath) does not exist"
            }
        }
        return nil
    }

    /// The first problem with the SQLite file's path, or nil.
    private static func databasePath(_ database: String) -> String? {
        let databaseDirectory = Self.directory(of: database)
        if !Self.isDirectory(databaseDirectory) {
            return "PAYMENTSD_DB: the directory \(databaseDirectory) of \(database) does not exist"
        }
        if access(databaseDirectory, W_OK | X_OK) != 0 {
            return "PAYMENTSD_DB: the directory \(databaseDirectory) of \(database) is not writable by this user"
        }
        if access(database, F_OK) == 0 && access(database, R_OK | W_OK) != 0 {
            return "PAYMENTSD_DB: \(database) is read-only for this user; paymentsd must be able to write it"
        }
        return nil
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let directory = String(path[..<slash])
        return directory.isEmpty ? "/" : directory
    }

    private static func isDirectory(_ path: String) -> Bool {
        var information = stat()
        return stat(path, &information) == 0 && (information.st_mode & S_IFMT) == S_IFDIR
    }
}
