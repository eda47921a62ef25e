import CNetlink
import HostPCI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Per-VF link settings of an SR-IOV NIC, read and written through its PF's network interface
/// with rtnetlink (libnl-route): RTM_GETLINK with `RTEXT_FILTER_VF` to read, RTM_SETLINK with
/// `IFLA_VFINFO_LIST` to write — what `ip link show` / `ip link set PF vf N …` do.
///
/// Each call opens its own NETLINK_ROUTE socket, so a call answers for the network namespace of
/// the thread that makes it. sysfs (`root`) is used only to go from a PCI address to an interface
/// and to name an interface's PCI function and driver in messages.
public struct VFLinkClient: Sendable {
    public var root: SysfsRoot

    public init(root: SysfsRoot = .system) {
        self.root = root
    }

    // MARK: PF ↔ interface

    /// The network interface of a PF: `ROOT/bus/pci/devices/ADDR/net/<ifname>`. When a function has
    /// several (a multi-port function), the one with the lowest `dev_port`, then name.
    public func interface(for pf: PCIAddress) throws(SRIOVError) -> String {
        let dev = root.devicePath(pf)
        guard access(dev, F_OK) == 0 else {
            throw SRIOVError(code: .noNetDevice, message: "no PCI device \(pf) (nothing at \(dev))")
        }
        if let parent = readLinkName(dev + "/physfn") {
            throw SRIOVError(code: .invalidArgument,
                             message: "\(pf) is a VF of \(parent); VF link settings are made through the PF: passage vf set \(parent) --vf N …")
        }
        let names = directoryEntries(dev + "/net")
        guard !names.isEmpty else {
            let why = readLinkName(dev + "/driver").map { "its driver \($0) made no network interface" }
                ?? "no driver is bound to it (bind its network driver first)"
            throw SRIOVError(code: .noNetDevice,
                             message: "\(pf) has no network interface: \(why); VF link settings apply to SR-IOV network adapters")
        }
        return names.min { a, b in
            let pa = readInt(dev + "/net/\(a)/dev_port") ?? 0, pb = readInt(dev + "/net/\(b)/dev_port") ?? 0
            return pa != pb ? pa < pb : a < b
        }!
    }

    /// The PCI function behind an interface (`ROOT/class/net/IF/device`), nil for virtual interfaces.
    public func pciAddress(ofInterface name: String) -> PCIAddress? {
        guard isPlainName(name), let target = readLinkName(root.path + "/class/net/\(name)/device") else { return nil }
        return try? PCIAddress(parsing: target)
    }

    /// The driver of an interface's device (`ROOT/class/net/IF/device/driver`), nil when it has none.
    public func driver(ofInterface name: String) -> String? {
        guard isPlainName(name) else { return nil }
        return readLinkName(root.path + "/class/net/\(name)/device/driver")
    }

    // MARK: reading

    /// RTM_GETLINK on `interface` with VF information: its index, `IFLA_NUM_VF` and every VF's settings.
    public func link(interface: String) throws(SRIOVError) -> NetlinkLink {
        let sock = try openSocket()
        return try link(interface: interface, on: sock)
    }

    /// Every VF's link settings as the PF's driver reports them; empty for an interface with no VFs
    /// (or one that is no PCI function at all).
    public func vfs(interface: String) throws(SRIOVError) -> [VFLinkInfo] {
        try link(interface: interface).vfs
    }

    func link(interface: String, on sock: borrowing NetlinkSocket) throws(SRIOVError) -> NetlinkLink {
        guard !interface.isEmpty, interface.utf8.count < 16 else {
            throw SRIOVError(code: .invalidArgument, message: "invalid interface name \(interface.debugDescription) (1–15 bytes)")
        }
        let msg = try VFLinkMessage.getLink(name: interface)
        let replies: [[UInt8]]
        do { replies = try sock.transact(msg) } catch {
            if error.errno == ENODEV {
                throw SRIOVError(code: .noNetDevice, message: "no network interface named \(interface) (in this network namespace)", errno: ENODEV)
            }
            throw SRIOVError(code: .netlink, message: "netlink RTM_GETLINK \(interface): \(error.text)", errno: error.errno)
        }
        guard let reply = replies.first else { throw VFLinkMessage.malformed("no RTM_NEWLINK for \(interface)") }
        var link = try VFLinkMessage.parseLink(reply)
        if link.name.isEmpty { link.name = interface }
        return link
    }

    // MARK: writing

    /// What `apply` would do: the requests, and the error a real run would stop at before sending
    /// anything (no VFs, VF out of range), if any.
    public struct Plan: Sendable {
        public var interface: String
        public var vf: Int
        /// One group of settings per RTM_SETLINK, rates completed with the VF's current values.
        public var requests: [VFLinkSettings]
        public var actions: [HostAction]
        /// Why a real run would fail before its first request; nil when it would send them.
        public var problem: SRIOVError?
    }

    /// Validates `settings`, reads the interface, and plans one RTM_SETLINK per setting group.
    /// Throws for invalid settings or a missing interface; a VF that does not exist is `problem`.
    public func plan(_ settings: VFLinkSettings, vf: Int, interface: String) throws(SRIOVError) -> Plan {
        let sock = try openSocket()
        let (plan, _) = try plan(settings, vf: vf, interface: interface, on: sock)
        return plan
    }

    func plan(_ settings: VFLinkSettings, vf: Int, interface: String, on sock: borrowing NetlinkSocket) throws(SRIOVError) -> (Plan, NetlinkLink) {
        try settings.validate()
        guard vf >= 0, vf <= Int(Int32.max) else {
            throw SRIOVError(code: .invalidArgument, message: "invalid VF index \(vf): expected 0 or more")
        }
        let link = try link(interface: interface, on: sock)
        let current = link.vfs.first { $0.index == vf }
        var requests = settings.groups
        for i in requests.indices where requests[i].minTxRate != nil || requests[i].maxTxRate != nil {
            // IFLA_VF_RATE carries both rates: keep the one not given at its current value.
            requests[i].minTxRate = requests[i].minTxRate ?? current?.minTxRate ?? 0
            requests[i].maxTxRate = requests[i].maxTxRate ?? current?.maxTxRate ?? 0
            if let min = requests[i].minTxRate, let max = requests[i].maxTxRate, max != 0, min > max {
                throw SRIOVError(code: .invalidArgument,
                                 message: "minimum tx rate \(min) Mbps would be above VF \(vf)'s maximum \(max) Mbps; give both --min-tx-rate and --max-tx-rate")
            }
        }
        let actions = requests.map { HostAction.netlink(interface: link.name, detail: "VF \(vf): \($0.summary)") }
        return (Plan(interface: link.name, vf: vf, requests: requests, actions: actions, problem: vfProblem(vf, link)), link)
    }

    /// Sets `settings` on VF `vf` of `interface`, one RTM_SETLINK per setting group, then reads the
    /// VF back and throws `.readbackMismatch` if the driver reports something else. With `dryRun`,
    /// only reads, and returns what it would send (even when the VF does not exist: see `plan`).
    @discardableResult
    public func apply(_ settings: VFLinkSettings, vf: Int, interface: String, dryRun: Bool) throws(SRIOVError) -> [HostAction] {
        let sock = try openSocket()
        let (plan, link) = try plan(settings, vf: vf, interface: interface, on: sock)
        if dryRun { return plan.actions }
        if let problem = plan.problem { throw problem }
        var done: [HostAction] = []
        for (request, action) in zip(plan.requests, plan.actions) {
            do {
                try send(request, vf: vf, link: link, on: sock)
            } catch {
                guard !done.isEmpty else { throw error }
                let applied = done.map { "\($0)" }.joined(separator: "; ")
                throw SRIOVError(code: error.code, message: error.message + " (already applied: \(applied))", errno: error.errno)
            }
            done.append(action)
        }
        let after = try self.link(interface: link.name, on: sock)
        if let info = after.vfs.first(where: { $0.index == vf }) {
            let wrong = plan.requests.flatMap { info.mismatches(with: $0) }
            if !wrong.isEmpty {
                throw SRIOVError(code: .readbackMismatch,
                                 message: "\(link.name) VF \(vf): the driver accepted the change but reports otherwise: " + wrong.joined(separator: "; "))
            }
        }
        return done
    }

    /// One RTM_SETLINK with one setting group, errors named for that setting. No checks first.
    func send(_ group: VFLinkSettings, vf: Int, link: NetlinkLink, on sock: borrowing NetlinkSocket) throws(SRIOVError) {
        let msg = try VFLinkMessage.setVF(index: link.index, vf: UInt32(vf), group)
        do {
            _ = try sock.transact(msg)
        } catch {
            throw setError(error, group: group, vf: vf, link: link)
        }
    }

    // MARK: errors

    /// Describes the interface for messages: `eth0 (PF 0000:3b:00.0)` or `veth0`.
    func describe(_ name: String) -> String {
        pciAddress(ofInterface: name).map { "\(name) (PF \($0))" } ?? name
    }

    func vfProblem(_ vf: Int, _ link: NetlinkLink) -> SRIOVError? {
        let count = link.numVFs ?? 0
        if count == 0 {
            if let pf = pciAddress(ofInterface: link.name) {
                return SRIOVError(code: .noVFs,
                                  message: "interface \(link.name) (PF \(pf)) has no VFs; create them with `passage vf create \(pf) --count N`")
            }
            return SRIOVError(code: .noVFs,
                              message: "interface \(link.name) has no VFs" + (link.numVFs == nil ? ": it is not an SR-IOV PCI function's interface" : ""))
        }
        if vf >= count {
            return SRIOVError(code: .invalidArgument,
                              message: "VF \(vf) does not exist on \(describe(link.name)): it has \(count) VF\(count == 1 ? "" : "s") (0–\(count - 1))")
        }
        return nil
    }

    func setError(_ f: NetlinkFailure, group: VFLinkSettings, vf: Int, link: NetlinkLink) -> SRIOVError {
        let driver = driver(ofInterface: link.name) ?? link.kind ?? "of \(link.name)"
        let kernel = f.kernelMessage.map { " (kernel: \($0))" } ?? ""
        switch f.errno {
        case EOPNOTSUPP:
            return SRIOVError(code: .notSupported,
                              message: "driver \(driver) does not support setting \(group.settingName) on VFs (\(describe(link.name)), VF \(vf))\(kernel)",
                              errno: f.errno)
        case EPERM, EACCES:
            return SRIOVError(code: .netlink,
                              message: "setting VF \(vf) \(group.summary) on \(link.name) needs CAP_NET_ADMIN (run as root)\(kernel)", errno: f.errno)
        default:
            return SRIOVError(code: .netlink,
                              message: "setting VF \(vf) \(group.summary) on \(describe(link.name)) failed: driver \(driver): \(f.text)", errno: f.errno)
        }
    }

    private func openSocket() throws(SRIOVError) -> NetlinkSocket {
        do { return try NetlinkSocket() } catch {
            throw SRIOVError(code: .netlink, message: "netlink: cannot open a NETLINK_ROUTE socket: \(error.text)", errno: error.errno)
        }
    }
}

// MARK: small sysfs readers (paths built from canonical names only)

private func isPlainName(_ s: String) -> Bool {
    !s.isEmpty && s != "." && s != ".." && !s.contains("/")
}

private func readLinkName(_ path: String) -> String? {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink(path, &buf, buf.count - 1)
    guard n > 0 else { return nil }
    let target = String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return target.split(separator: "/").last.map(String.init)
}

private func readInt(_ path: String) -> Int? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var buf = [CChar](repeating: 0, count: 64)
    guard fgets(&buf, Int32(buf.count), f) != nil else { return nil }
    return Int(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmingCharacters(in: " \n"))
}

private func directoryEntries(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafePointer(to: &e.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return String(s)
    }
}
