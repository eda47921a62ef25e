import HostPCI

#if canImport(Glibc)
import Glibc
#endif

/// The few sysfs reads NVMe provisioning needs, under a `SysfsRoot`: the PF's controller
/// (`nvme/nvmeN`), its driver, its VFs (`virtfnN`) and a controller's state.
enum NVMeSysfs {
    /// An attribute's text without trailing newlines, or nil when it cannot be read.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n >= 0 else { return nil }
        var end = n
        while end > 0 && (bytes[end - 1] == UInt8(ascii: "\n") || bytes[end - 1] == 0) { end -= 1 }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// The last component of a symbolic link's target (`driver` → `nvme`), or nil.
    static func linkName(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBufferPointer { readlink(path, $0.baseAddress!, 4095) }
        guard n > 0 else { return nil }
        return lastComponent(String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// Names in a directory, without `.` and `..`; empty when it does not exist.
    static func entries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// The driver bound to `address`, or nil.
    static func driver(_ address: PCIAddress, root: SysfsRoot) -> String? {
        linkName(root.devicePath(address) + "/driver")
    }

    /// The address of VF `index` of `pf` (`virtfnINDEX`), or nil when that VF does not exist.
    static func vfAddress(pf: PCIAddress, index: Int, root: SysfsRoot) -> PCIAddress? {
        linkName(root.devicePath(pf) + "/virtfn\(index)").flatMap { PCIAddress.fromSysfsName($0) }
    }

    /// The controller names (`nvme0`) the nvme driver created for `address`, lowest number first.
    static func controllerNames(_ address: PCIAddress, root: SysfsRoot) -> [String] {
        entries(root.devicePath(address) + "/nvme")
            .filter { $0.hasPrefix("nvme") && $0.count > 4 && $0.dropFirst(4).allSatisfy(\.isNumber) }
            .sorted { (Int($0.dropFirst(4)) ?? 0) < (Int($1.dropFirst(4)) ?? 0) }
    }
}
