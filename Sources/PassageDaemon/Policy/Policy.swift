import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// What the operator wants, from `/etc/passage/passage.toml` (docs/configuration.md): PF rules
/// (which PFs, how many VFs, which driver for them, NVMe resources, per-VF link settings) and
/// pools. Parsing checks everything that can be checked without the host; errors say
/// `FILE:LINE: FIELD: problem`.
public struct Policy: Sendable, Equatable {
    public var file: String
    public var pfs: [PFRule]
    public var pools: [PoolRule]

    public static let defaultPath = "/etc/passage/passage.toml"

    public init(file: String, pfs: [PFRule] = [], pools: [PoolRule] = []) {
        self.file = file
        self.pfs = pfs
        self.pools = pools
    }

    /// Which PFs a rule is about; every field given must match.
    public struct PFMatch: Sendable, Equatable {
        public var address: PCIAddress?
        public var vendorID: UInt16?
        public var deviceID: UInt16?
        /// Class code prefix in hex (`02`, `0108`, `010802`).
        public var classPrefix: String?
        public var driver: String?
        /// The PF's network interface name (`/sys/bus/pci/devices/ADDR/net/NAME`).
        public var interface: String?
        /// The PF's NVMe controller serial (`/sys/bus/pci/devices/ADDR/nvme/nvmeN/serial`).
        public var nvmeSerial: String?

        public var isEmpty: Bool {
            address == nil && vendorID == nil && deviceID == nil && classPrefix == nil && driver == nil && interface == nil && nvmeSerial == nil
        }
    }

    public enum VFDriver: String, Sendable, Equatable {
        /// Every VF on vfio-pci, ready for passthrough (autoprobe off while creating).
        case vfio = "vfio-pci"
        /// The kernel's choice (autoprobe on): VFs serve the host.
        case host
    }

    public struct PFRule: Sendable, Equatable {
        public var line: Int
        public var name: String?
        public var match: PFMatch
        public var vfs: Int
        public var vfDriver: VFDriver
        public var nvmeQueues: Int?
        public var nvmeInterrupts: Int?
        /// VF index → link settings.
        public var links: [Int: VFLinkSettings]

        public var label: String { name ?? "pf rule at line \(line)" }
    }

    public struct PoolRule: Sendable, Equatable {
        public var line: Int
        public var name: String
        public var selector: DeviceSelector
    }

    /// An empty policy when `path` does not exist (nothing is wanted, nothing is touched).
    public static func load(_ path: String) throws(PolicyError) -> Policy {
        guard FileManager.default.fileExists(atPath: path) else { return Policy(file: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PolicyError(file: path, line: 0, field: nil, message: "cannot read the file (permissions?)")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path)
    }

    public static func parse(_ text: String, file: String) throws(PolicyError) -> Policy {
        let root: TOMLTable
        do { root = try TOMLParser.parse(text) } catch {
            throw PolicyError(file: file, line: error.line, field: nil, message: error.message)
        }
        var r = Reader(file: file)
        return try r.policy(root)
    }
}

public struct PolicyError: Error, Sendable, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int
    public var field: String?
    public var message: String

    public var description: String { "\(file):\(line): " + (field.map { "\($0): " } ?? "") + message }
}

/// Turns the TOML tree into a Policy, refusing unknown keys and wrong types.
private struct Reader {
    let file: String

    func fail(_ node: TOMLNode?, _ field: String, _ message: String, line: Int? = nil) -> PolicyError {
        PolicyError(file: file, line: line ?? node?.line ?? 0, field: field, message: message)
    }

    func table(_ t: TOMLTable, allowed: Set<String>, prefix: String) throws(PolicyError) {
        for (k, n) in t.entries where !allowed.contains(k) {
            throw fail(n, prefix + k, "unknown key; expected one of \(allowed.sorted().joined(separator: ", "))")
        }
    }

    func string(_ t: TOMLTable, _ k: String, _ field: String) throws(PolicyError) -> String? {
        guard let n = t[k] else { return nil }
        guard case .string(let s) = n.value else { throw fail(n, field, "expected a string, found \(n.value.typeName)") }
        return s
    }

    func int(_ t: TOMLTable, _ k: String, _ field: String, _ range: ClosedRange<Int>) throws(PolicyError) -> Int? {
        guard let n = t[k] else { return nil }
        guard case .integer(let v) = n.value else { throw fail(n, field, "expected an integer, found \(n.value.typeName)") }
        guard range.contains(v) else { throw fail(n, field, "\(v) is out of range \(range.lowerBound)…\(range.upperBound)") }
        return v
    }

    func bool(_ t: TOMLTable, _ k: String, _ field: String) throws(PolicyError) -> Bool? {
        guard let n = t[k] else { return nil }
        guard case .boolean(let v) = n.value else { throw fail(n, field, "expected true or false, found \(n.value.typeName)") }
        return v
    }

    func tables(_ t: TOMLTable, _ k: String, _ field: String) throws(PolicyError) -> [TOMLTable] {
        guard let n = t[k] else { return [] }
        guard case .array(let items) = n.value else { throw fail(n, field, "expected [[\(field)]] tables, found \(n.value.typeName)") }
        var out: [TOMLTable] = []
        for item in items {
            guard case .table(let inner) = item.value else { throw fail(item, field, "expected a table, found \(item.value.typeName)") }
            out.append(inner)
        }
        return out
    }

    func hex16(_ t: TOMLTable, _ k: String, _ field: String) throws(PolicyError) -> UInt16? {
        guard let s = try string(t, k, field) else { return nil }
        let digits = s.lowercased().hasPrefix("0x") ? String(s.dropFirst(2)) : s
        guard digits.count == 4, let v = UInt16(digits, radix: 16) else { throw fail(t[k], field, "\(s): expected 4 hex digits (8086)") }
        return v
    }

    func classPrefix(_ t: TOMLTable, _ k: String, _ field: String) throws(PolicyError) -> String? {
        guard let s = try string(t, k, field) else { return nil }
        guard [2, 4, 6].contains(s.count), UInt32(s, radix: 16) != nil else { throw fail(t[k], field, "\(s): expected 2, 4 or 6 hex digits (02 network, 0108 NVMe)") }
        return s.lowercased()
    }

    func address(_ t: TOMLTable, _ k: String, _ field: String) throws(PolicyError) -> PCIAddress? {
        guard let s = try string(t, k, field) else { return nil }
        do { return try PCIAddress(parsing: s) } catch { throw fail(t[k], field, error.message) }
    }

    mutating func policy(_ root: TOMLTable) throws(PolicyError) -> Policy {
        try table(root, allowed: ["pf", "pool"], prefix: "")
        var p = Policy(file: file)
        for (i, t) in try tables(root, "pf", "pf").enumerated() { p.pfs.append(try pfRule(t, index: i)) }
        var names: [String: Int] = [:]
        for t in try tables(root, "pool", "pool") {
            let rule = try pool(t)
            if let first = names[rule.name] { throw fail(t["name"], "pool.name", "pool \(rule.name) is already defined at line \(first)") }
            names[rule.name] = rule.line
            p.pools.append(rule)
        }
        // Two rules naming the same PF address would fight over it.
        var byAddress: [PCIAddress: Int] = [:]
        for r in p.pfs {
            guard let a = r.match.address else { continue }
            if let other = byAddress[a] { throw fail(nil, "pf.match.address", "\(a) is already matched by the rule at line \(other)", line: r.line) }
            byAddress[a] = r.line
        }
        return p
    }

    func pfRule(_ t: TOMLTable, index: Int) throws(PolicyError) -> Policy.PFRule {
        let f = "pf[\(index)]."
        try table(t, allowed: ["name", "match", "vfs", "vf_driver", "nvme", "vf"], prefix: f)
        guard let matchNode = t["match"], case .table(let m) = matchNode.value else {
            throw fail(nil, f + "match", "every [[pf]] needs match = { address = \"0000:3b:00.0\" } (or vendor, device, class, driver, interface, nvme_serial)", line: t.line)
        }
        try table(m, allowed: ["address", "vendor", "device", "class", "driver", "interface", "nvme_serial"], prefix: f + "match.")
        let match = Policy.PFMatch(
            address: try address(m, "address", f + "match.address"),
            vendorID: try hex16(m, "vendor", f + "match.vendor"),
            deviceID: try hex16(m, "device", f + "match.device"),
            classPrefix: try classPrefix(m, "class", f + "match.class"),
            driver: try string(m, "driver", f + "match.driver"),
            interface: try string(m, "interface", f + "match.interface"),
            nvmeSerial: try string(m, "nvme_serial", f + "match.nvme_serial"))
        guard !match.isEmpty else { throw fail(matchNode, f + "match", "an empty match would take every PF on the host; name at least one field") }
        guard let vfs = try int(t, "vfs", f + "vfs", 0...4096) else {
            throw fail(nil, f + "vfs", "missing: how many VFs the PF should have (0 removes them)", line: t.line)
        }
        var driver = Policy.VFDriver.host
        if let d = try string(t, "vf_driver", f + "vf_driver") {
            guard let v = Policy.VFDriver(rawValue: d) else { throw fail(t["vf_driver"], f + "vf_driver", "\(d): expected \"vfio-pci\" or \"host\"") }
            driver = v
        }
        var queues: Int?, interrupts: Int?
        if let n = t["nvme"] {
            guard case .table(let nv) = n.value else { throw fail(n, f + "nvme", "expected { queues = Q, interrupts = I }") }
            try table(nv, allowed: ["queues", "interrupts"], prefix: f + "nvme.")
            queues = try int(nv, "queues", f + "nvme.queues", 2...4096)
            interrupts = try int(nv, "interrupts", f + "nvme.interrupts", 1...2048)
            guard queues != nil, interrupts != nil else { throw fail(n, f + "nvme", "give both queues (at least 2: admin + I/O) and interrupts") }
        }
        var links: [Int: VFLinkSettings] = [:]
        for (j, v) in try tables(t, "vf", f + "vf").enumerated() {
            let g = f + "vf[\(j)]."
            try table(v, allowed: ["index", "mac", "vlan", "qos", "vlan_proto", "trust", "spoofchk", "link_state", "min_tx_rate", "max_tx_rate"], prefix: g)
            guard let index = try int(v, "index", g + "index", 0...4095) else { throw fail(nil, g + "index", "missing: which VF (from 0)", line: v.line) }
            guard index < vfs else { throw fail(v["index"], g + "index", "VF \(index) does not exist with vfs = \(vfs)") }
            guard links[index] == nil else { throw fail(v["index"], g + "index", "VF \(index) already has settings") }
            var s = VFLinkSettings()
            func sriov<T>(_ k: String, _ parse: (String) throws(SRIOVError) -> T) throws(PolicyError) -> T? {
                guard let text = try string(v, k, g + k) else { return nil }
                do { return try parse(text) } catch { throw fail(v[k], g + k, error.message) }
            }
            s.mac = try sriov("mac") { (t: String) throws(SRIOVError) in try MACAddress(parsing: t) }
            s.vlan = try int(v, "vlan", g + "vlan", 0...4095)
            s.qos = try int(v, "qos", g + "qos", 0...7)
            s.vlanProtocol = try sriov("vlan_proto") { (t: String) throws(SRIOVError) in try VLANProtocol(parsing: t) }
            s.trust = try bool(v, "trust", g + "trust")
            s.spoofCheck = try bool(v, "spoofchk", g + "spoofchk")
            s.linkState = try sriov("link_state") { (t: String) throws(SRIOVError) in try VFLinkState(parsing: t) }
            s.minTxRate = try int(v, "min_tx_rate", g + "min_tx_rate", 0...Int(UInt32.max)).map(UInt32.init)
            s.maxTxRate = try int(v, "max_tx_rate", g + "max_tx_rate", 0...Int(UInt32.max)).map(UInt32.init)
            do { try s.validate() } catch { throw fail(nil, String(g.dropLast()), error.message, line: v.line) }
            links[index] = s
        }
        return Policy.PFRule(line: t.line, name: try string(t, "name", f + "name"), match: match, vfs: vfs, vfDriver: driver,
                             nvmeQueues: queues, nvmeInterrupts: interrupts, links: links)
    }

    func pool(_ t: TOMLTable) throws(PolicyError) -> Policy.PoolRule {
        try table(t, allowed: ["name", "vendor", "device", "class", "pf", "numa", "driver"], prefix: "pool.")
        guard let name = try string(t, "name", "pool.name") else { throw fail(nil, "pool.name", "missing: every [[pool]] has a name", line: t.line) }
        guard ClaimService.validPoolName(name) else { throw fail(t["name"], "pool.name", "\(name): 1 to 63 of a-z, 0-9, '-', '_', '.'") }
        let selector = DeviceSelector(
            vendorId: try hex16(t, "vendor", "pool.vendor").map { hex($0, 4) },
            deviceId: try hex16(t, "device", "pool.device").map { hex($0, 4) },
            classCode: try classPrefix(t, "class", "pool.class"),
            pf: try address(t, "pf", "pool.pf")?.description,
            numaNode: try int(t, "numa", "pool.numa", 0...1023),
            driver: try string(t, "driver", "pool.driver"))
        guard selector != DeviceSelector() else { throw fail(nil, "pool", "pool \(name) needs at least one of vendor, device, class, pf, numa, driver", line: t.line) }
        return Policy.PoolRule(line: t.line, name: name, selector: selector)
    }
}
