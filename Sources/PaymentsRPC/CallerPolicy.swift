import PaymentsWire

#if canImport(Glibc)
import Glibc
#endif

/// Who may call (protocol.md section 6).
///
/// Allowed: root, the daemon's own uid, and members of the allowed groups.
/// Admin methods additionally need root, the daemon's uid, or an admin group: an admin group
/// alone does not make a caller allowed (section 6 says "additionally").
/// Group membership is the peer's gid plus the supplementary groups the
/// group database gives its user.
public struct CallerPolicy: Sendable {
    public let daemonUID: UInt32
    public let allowedGroups: Set<UInt32>
    public let adminGroups: Set<UInt32>
    private let groupsOf: @Sendable (PeerCredentials) -> Set<UInt32>

    public init(
        daemonUID: UInt32 = getuid(), allowedGroups: Set<UInt32>, adminGroups: Set<UInt32>,
        groupsOf: @escaping @Sendable (PeerCredentials) -> Set<UInt32> = CallerPolicy.systemGroups
    ) {
        self.daemonUID = daemonUID
        self.allowedGroups = allowedGroups
        self.adminGroups = adminGroups
        self.groupsOf = groupsOf
    }

    /// Whether `peer` may call `method` at all (nil: the method is unknown, only the caller is checked).
    public func permits(_ peer: PeerCredentials, method: MethodName?) -> Bool {
        if peer.uid == 0 || peer.uid == self.daemonUID { return true }
        let groups = self.groupsOf(peer)
        guard !groups.isDisjoint(with: self.allowedGroups) else { return false }
        guard let method, method.requiresAdmin else { return true }
        return !groups.isDisjoint(with: self.adminGroups)
    }

    /// The peer's gid and its user's groups from the group database.
    public static let systemGroups: @Sendable (PeerCredentials) -> Set<UInt32> = { peer in
        var groups: Set<UInt32> = [peer.gid]
        var entry = passwd()
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        var result: UnsafeMutablePointer<passwd>?
        guard getpwuid_r(peer.uid, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return groups }
        var count: Int32 = 64
        var list = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(entry.pw_name, entry.pw_gid, &list, &count) == -1 {
            list = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(entry.pw_name, entry.pw_gid, &list, &count)
        }
        groups.formUnion(list.prefix(Int(max(0, count))))
        return groups
    }
}
