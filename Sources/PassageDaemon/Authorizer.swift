import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Who may change things: root, and members of the `passage` group (primary or supplementary).
/// Everyone who can reach the socket may read.
public struct Authorizer: Sendable {
    public var groupName: String

    public init(groupName: String = "passage") {
        self.groupName = groupName
    }

    public func mayChange(_ peer: PeerCredentials?) -> Bool {
        guard let peer else { return false }
        if peer.uid == 0 { return true }
        guard let group = getgrnam(groupName) else { return false }
        let gid = group.pointee.gr_gid
        if peer.gid == gid { return true }
        guard let pw = getpwuid(peer.uid) else { return false }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: 64)
        if getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(pw.pointee.pw_name, pw.pointee.pw_gid, &groups, &count) >= 0 else { return false }
        }
        return groups.prefix(Int(count)).contains(gid)
    }
}
