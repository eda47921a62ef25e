#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The root of a sysfs tree: `/sys` on a real host, a fixture directory in tests.
///
/// Every path Passage reads or writes is built from a `SysfsRoot` and canonical names
/// (`PCIAddress.description`, group numbers), never from unparsed input.
public struct SysfsRoot: Sendable, Hashable, CustomStringConvertible {
    public let path: String

    /// The real sysfs of this machine.
    public static let system = SysfsRoot(path: "/sys")

    public init(path: String) {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        self.path = p
    }

    /// True when this root is the machine's own `/sys` (by path or by resolving to it).
    public var isSystem: Bool {
        if path == "/sys" { return true }
        guard let resolved = realpath(path, nil) else { return false }
        defer { free(resolved) }
        return String(cString: resolved) == "/sys"
    }

    public var description: String { path }

    /// `ROOT/bus/pci` — what libpci's `sysfs.path` wants.
    public var pciBusPath: String { path + "/bus/pci" }
    public var pciDevicesPath: String { path + "/bus/pci/devices" }
    public var iommuGroupsPath: String { path + "/kernel/iommu_groups" }

    public func devicePath(_ address: PCIAddress) -> String { pciDevicesPath + "/" + address.description }
    public func iommuGroupPath(_ group: Int) -> String { iommuGroupsPath + "/\(group)" }
}

/// An open sysfs directory; attributes are read relative to it with `openat`, so a scan of
/// thousands of devices resolves each long device path once, not once per attribute.
struct SysfsDirectory: ~Copyable {
    let fd: Int32
    let path: String

    /// Opens `path` as a directory, or returns nil if it does not exist.
    init?(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Reads an attribute file, at most `limit` bytes. Returns nil if it does not exist or cannot be opened.
    func readBytes(_ name: String, limit: Int = 4096) -> [UInt8]? {
        let f = openat(fd, name, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { return nil }
        defer { close(f) }
        return [UInt8](unsafeUninitializedCapacity: limit) { buf, count in
            var total = 0
            while total < limit {
                let r = read(f, buf.baseAddress! + total, limit - total)
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { break }
                total += r
            }
            count = total
        }
    }

    /// Reads an attribute as text without its trailing newline.
    func readString(_ name: String) -> String? {
        guard var bytes = readBytes(name) else { return nil }
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == 0 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads a `0x`-prefixed hex attribute (`vendor`, `class`, …).
    func readHex(_ name: String) -> UInt64? {
        guard let s = readString(name) else { return nil }
        return parseHex(s)
    }

    /// Reads a decimal attribute (`numa_node`, `sriov_numvfs`, …).
    func readInt(_ name: String) -> Int? {
        guard let s = readString(name) else { return nil }
        return Int(s.trimmingSpaces)
    }

    /// The target of a symbolic link, or nil.
    func readLink(_ name: String) -> String? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { readlinkat(fd, name, $0, p.count) }
        }
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n], as: UTF8.self)
    }

    /// Names in the directory, without `.` and `..`.
    func entries() -> [String] {
        let dup = dup(fd)
        guard dup >= 0, let dir = fdopendir(dup) else { return [] }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    func exists(_ name: String) -> Bool {
        faccessat(fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0
    }
}

/// Parses `0x1af4`, `1af4` (with optional surrounding white space) as hex.
func parseHex(_ s: some StringProtocol) -> UInt64? {
    var t = Substring(s.trimmingSpaces)
    if t.hasPrefix("0x") || t.hasPrefix("0X") { t = t.dropFirst(2) }
    guard !t.isEmpty else { return nil }
    return UInt64(t, radix: 16)
}

/// The last path component of a link target: `../../../kernel/iommu_groups/12` → `12`.
func lastComponent(_ path: String) -> Substring {
    if let slash = path.lastIndex(of: "/") { return path[path.index(after: slash)...] }
    return Substring(path)
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\n" || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\n" || l == "\t" { s.removeLast() }
        return String(s)
    }
}
