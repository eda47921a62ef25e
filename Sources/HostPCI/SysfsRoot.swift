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
    /// A short read ends the file: sysfs attributes and regular files return everything they have at once.
    func readBytes(_ name: String, limit: Int = 4096) -> [UInt8]? {
        let f = openat(fd, name, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { return nil }
        defer { close(f) }
        return [UInt8](unsafeUninitializedCapacity: limit) { buf, count in
            var total = 0
            while total < limit {
                let want = limit - total
                let r = read(f, buf.baseAddress! + total, want)
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { break }
                total += r
                if r < want { break }
            }
            count = total
        }
    }

    /// Reads an attribute as text without its trailing newline.
    func readString(_ name: String, limit: Int = 4096) -> String? {
        guard let bytes = readBytes(name, limit: limit) else { return nil }
        var end = bytes.count
        while end > 0 && (bytes[end - 1] == UInt8(ascii: "\n") || bytes[end - 1] == 0) { end -= 1 }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// Reads a hex attribute (`0x8086` in `vendor`, `class`, …; plain digits in `sriov_vf_device`).
    func readHex(_ name: String) -> UInt64? {
        readBytes(name, limit: 64).flatMap { parseHex($0[...]) }
    }

    /// Reads a decimal attribute (`numa_node`, `sriov_numvfs`, …), which may be negative.
    func readInt(_ name: String) -> Int? {
        readBytes(name, limit: 64).flatMap { parseDecimal($0[...]) }
    }

    /// The target of a symbolic link as bytes, or nil.
    func readLinkBytes(_ name: String) -> [UInt8]? {
        let bytes = [UInt8](unsafeUninitializedCapacity: 4096) { buf, count in
            let n = buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: 4096) { readlinkat(fd, name, $0, 4096) }
            count = max(n, 0)
        }
        return bytes.isEmpty ? nil : bytes
    }

    /// The target of a symbolic link, or nil.
    func readLink(_ name: String) -> String? {
        readLinkBytes(name).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The last path component of a link's target, as text (`driver` → `vfio-pci`).
    func readLinkName(_ name: String) -> String? {
        readLinkBytes(name).map { String(decoding: lastComponent($0), as: UTF8.self) }
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

/// Parses `0x1af4`, `1af4` (leading white space allowed, anything after the digits ignored) as hex.
func parseHex(_ s: ArraySlice<UInt8>) -> UInt64? {
    var i = s.startIndex
    while i < s.endIndex && (s[i] == UInt8(ascii: " ") || s[i] == UInt8(ascii: "\t")) { i += 1 }
    if i + 1 < s.endIndex && s[i] == UInt8(ascii: "0") && (s[i + 1] | 0x20) == UInt8(ascii: "x") { i += 2 }
    var value: UInt64 = 0
    var digits = 0
    while i < s.endIndex {
        let c = s[i]
        let v: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c &- UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c &- UInt8(ascii: "a") &+ 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c &- UInt8(ascii: "A") &+ 10
        default: return digits > 0 && digits <= 16 ? value : nil
        }
        value = value << 4 | UInt64(v)
        digits += 1
        i += 1
    }
    return digits > 0 && digits <= 16 ? value : nil
}

func parseHex(_ s: some StringProtocol) -> UInt64? { parseHex(Array(s.utf8)[...]) }

/// Parses an optionally negative decimal (leading white space allowed, anything after the digits ignored).
func parseDecimal(_ s: ArraySlice<UInt8>) -> Int? {
    var i = s.startIndex
    while i < s.endIndex && (s[i] == UInt8(ascii: " ") || s[i] == UInt8(ascii: "\t")) { i += 1 }
    var negative = false
    if i < s.endIndex && s[i] == UInt8(ascii: "-") { negative = true; i += 1 }
    var value = 0
    var digits = 0
    while i < s.endIndex, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9"), digits < 18 {
        value = value * 10 + Int(s[i] - UInt8(ascii: "0"))
        digits += 1
        i += 1
    }
    return digits > 0 ? (negative ? -value : value) : nil
}

/// The last path component of a link target: `../../../kernel/iommu_groups/12` → `12`.
func lastComponent(_ path: [UInt8]) -> ArraySlice<UInt8> {
    if let slash = path.lastIndex(of: UInt8(ascii: "/")) { return path[(slash + 1)...] }
    return path[...]
}

/// Read helpers by full path, for modules above HostPCI that read a few sysfs attributes of their
/// own (paths still built from a root and canonical names: `devicePath(_:)` and friends).
extension SysfsRoot {
    /// An attribute's text without its trailing newline, or nil when it cannot be read.
    public static func readAttribute(_ path: String) -> String? {
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return SysfsDirectory(parentOf: path)?.readString(String(path[path.index(after: slash)...]))
    }

    /// The last component of a symbolic link's target (`…/driver` → `nvme`), or nil.
    public static func linkName(_ path: String) -> String? {
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return SysfsDirectory(parentOf: path)?.readLinkName(String(path[path.index(after: slash)...]))
    }

    /// Names in a directory, without `.` and `..`; empty when it does not exist.
    public static func entries(_ path: String) -> [String] {
        SysfsDirectory(path)?.entries() ?? []
    }

    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }
}

extension SysfsDirectory {
    /// The directory holding `path` (`/sys/…/0000:01:00.0/driver` → `/sys/…/0000:01:00.0`).
    init?(parentOf path: String) {
        guard let slash = path.lastIndex(of: "/") else { return nil }
        self.init(slash == path.startIndex ? "/" : String(path[..<slash]))
    }
}
