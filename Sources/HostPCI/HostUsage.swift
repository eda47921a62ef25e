import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finds what the host is using on a device: block devices (or their partitions) that are mounted,
/// used as swap or held by device-mapper/md, and network interfaces that are up with addresses.
/// Taking such a device away from its driver would take the file system or the network with it.
public struct HostUsage: Sendable {
    public let root: SysfsRoot
    /// `/proc/self/mountinfo` on a real host; a fixture file in tests.
    public var mountInfoPath: String
    public var swapsPath: String
    /// Addresses of an interface: getifaddrs(3) on a real host.
    public var addresses: @Sendable (String) -> [String]

    public init(root: SysfsRoot, mountInfoPath: String = "/proc/self/mountinfo", swapsPath: String = "/proc/swaps",
                addresses: @escaping @Sendable (String) -> [String] = HostUsage.interfaceAddresses) {
        self.root = root
        self.mountInfoPath = mountInfoPath
        self.swapsPath = swapsPath
        self.addresses = addresses
    }

    /// Sentences naming each use, e.g. `nvme0n1p2 (259:2) is mounted on /`. Empty when the host uses nothing on it.
    public func uses(of a: PCIAddress) -> [String] {
        var reasons: [String] = []
        let mounts = readLines(mountInfoPath).compactMap(Self.parseMountInfo)
        let swaps = Set(readLines(swapsPath).dropFirst().compactMap { $0.split(separator: " ").first.map(String.init) })
        for block in blockDevices(under: root.devicePath(a), depth: 0) {
            for m in mounts where m.device == block.dev || m.source == "/dev/" + block.name {
                reasons.append("\(block.name) (\(block.dev)) is mounted on \(m.mountPoint)")
            }
            if swaps.contains("/dev/" + block.name) { reasons.append("\(block.name) is in use as swap") }
            if !block.holders.isEmpty { reasons.append("\(block.name) is held by \(block.holders.joined(separator: ", "))") }
        }
        for (ifname, path) in interfaces(under: root.devicePath(a), depth: 0) {
            let state = SysfsDirectory(path)?.readString("operstate") ?? "unknown"
            let addrs = addresses(ifname)
            if state == "up" && !addrs.isEmpty {
                reasons.append("interface \(ifname) is up with address\(addrs.count == 1 ? "" : "es") \(addrs.joined(separator: ", "))")
            }
        }
        return reasons
    }

    struct BlockDevice {
        var name: String
        var dev: String
        var holders: [String]
    }

    /// Block devices (directories with `dev` and `size`) below a device directory, not following links.
    func blockDevices(under path: String, depth: Int) -> [BlockDevice] {
        guard depth < 7, let dir = SysfsDirectory(path) else { return [] }
        var found: [BlockDevice] = []
        let names = dir.entries()
        if depth > 0, names.contains("dev"), names.contains("size"), let dev = dir.readString("dev") {
            let holders = SysfsDirectory(path + "/holders")?.entries().sorted() ?? []
            found.append(BlockDevice(name: lastName(path), dev: dev, holders: holders))
        }
        for name in names where !Self.skipped.contains(name) {
            var st = stat()
            guard lstat(path + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            found += blockDevices(under: path + "/" + name, depth: depth + 1)
        }
        return found
    }

    /// Network interfaces below a device directory (`net/IFNAME`, also under `virtioN/`), not following links.
    func interfaces(under path: String, depth: Int) -> [(String, String)] {
        guard depth < 4, let dir = SysfsDirectory(path) else { return [] }
        var found: [(String, String)] = []
        for name in dir.entries().sorted() where !Self.skipped.contains(name) {
            var st = stat()
            guard lstat(path + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            if name == "net" {
                found += (SysfsDirectory(path + "/net")?.entries().sorted() ?? []).map { ($0, path + "/net/" + $0) }
            } else {
                found += interfaces(under: path + "/" + name, depth: depth + 1)
            }
        }
        return found
    }

    static let skipped: Set<String> = ["subsystem", "driver", "power", "holders", "slaves", "msi_irqs", "iommu_group", "iommu", "firmware_node", "physfn"]

    struct Mount {
        var device: String
        var mountPoint: String
        var source: String
    }

    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`
    static func parseMountInfo(_ line: Substring) -> Mount? {
        let f = line.split(separator: " ")
        guard f.count >= 10, let dash = f.firstIndex(of: "-"), dash + 2 < f.count else { return nil }
        return Mount(device: String(f[2]), mountPoint: unescape(f[4]), source: String(f[dash + 2]))
    }

    /// mountinfo escapes space, tab, newline and backslash as \040 etc.
    static func unescape(_ s: Substring) -> String {
        s.replacingOccurrences(of: "\\040", with: " ").replacingOccurrences(of: "\\011", with: "\t")
            .replacingOccurrences(of: "\\012", with: "\n").replacingOccurrences(of: "\\134", with: "\\")
    }

    func readLines(_ path: String) -> [Substring] {
        guard let dir = SysfsDirectory(parentOf: path), let text = dir.readString(lastName(path), limit: 1 << 20) else { return [] }
        return text.split(separator: "\n")
    }

    /// IPv4 and IPv6 addresses of an interface, from getifaddrs(3).
    public static let interfaceAddresses: @Sendable (String) -> [String] = { name in
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var result: [String] = []
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let ifa = p {
            defer { p = ifa.pointee.ifa_next }
            guard let addr = ifa.pointee.ifa_addr, String(cString: ifa.pointee.ifa_name) == name else { continue }
            let family = Int32(addr.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let len = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            if getnameinfo(addr, len, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                result.append(String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return result
    }
}

private func lastName(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}
