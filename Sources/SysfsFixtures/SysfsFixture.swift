import Foundation
import HostPCI

/// Writes sysfs-shaped trees for tests and benchmarks: device directories with attribute files,
/// real configuration-space bytes (so libpci walks real capability lists), and the kernel's
/// symlinks (`bus/pci/devices/*`, `driver`, `iommu_group`, `physfn`, `virtfnN`).
///
/// A fixture never points at the real `/sys`: `init` refuses any root that resolves there.
public final class SysfsFixture {
    public let root: SysfsRoot
    private let fm = FileManager.default
    private var devicePaths: [PCIAddress: String] = [:]

    /// Creates an empty tree in a new temporary directory.
    public convenience init(prefix: String = "passage-sysfs") throws {
        let tmp = NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/"
        var template = Array((tmp + "\(prefix).XXXXXX").utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw FixtureError("mkdtemp failed: errno \(errno)")
        }
        try self.init(directory: String(cString: dir))
    }

    /// Creates (or extends) a tree under `directory`.
    public init(directory: String) throws {
        root = SysfsRoot(path: directory)
        guard !root.isSystem else { throw FixtureError("refusing to write a fixture over the real /sys") }
        for d in ["bus/pci/devices", "bus/pci/drivers", "devices", "kernel/iommu_groups"] {
            try fm.createDirectory(atPath: root.path + "/" + d, withIntermediateDirectories: true)
        }
        // Reopening a tree written earlier: index the devices it already has.
        for name in (try? fm.contentsOfDirectory(atPath: root.pciDevicesPath)) ?? [] {
            guard let a = PCIAddress.fromSysfsName(name) else { continue }
            devicePaths[a] = URL(fileURLWithPath: root.pciDevicesPath + "/" + name).resolvingSymlinksInPath().path
        }
    }

    /// Deletes the whole tree.
    public func remove() {
        try? fm.removeItem(atPath: root.path)
    }

    /// The directory a device was written to (its real path, not the bus link).
    public func devicePath(_ address: PCIAddress) -> String? { devicePaths[address] }

    /// Writes one function. Its parent bridge (if any) must have been added first; a VF's PF too.
    @discardableResult
    public func add(_ d: FixtureDevice) throws -> String {
        let parentDir: String
        if let parent = d.parent {
            guard let p = devicePaths[parent] else { throw FixtureError("parent \(parent) of \(d.address) not added yet") }
            parentDir = p
        } else {
            parentDir = root.path + "/devices/pci\(hex(d.address.domain, 4)):\(hex(d.hostBridgeBus ?? d.address.bus, 2))"
        }
        let dir = parentDir + "/" + d.address.description
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        devicePaths[d.address] = dir

        func write(_ name: String, _ text: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
        try write("vendor", "0x\(hex(d.vendorID, 4))\n")
        try write("device", "0x\(hex(d.deviceID, 4))\n")
        try write("subsystem_vendor", "0x\(hex(d.subsystemVendorID, 4))\n")
        try write("subsystem_device", "0x\(hex(d.subsystemDeviceID, 4))\n")
        try write("class", "0x\(hex(d.classCode, 6))\n")
        try write("revision", "0x\(hex(d.revision, 2))\n")
        try write("numa_node", "\(d.numaNode)\n")
        try write("driver_override", (d.driverOverride ?? "(null)") + "\n")
        try write("irq", "0\n")
        try write("modalias", String(format: "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\n",
                                     UInt32(d.vendorID), UInt32(d.deviceID), UInt32(d.subsystemVendorID),
                                     UInt32(d.subsystemDeviceID), (d.classCode >> 16) & 0xff, (d.classCode >> 8) & 0xff,
                                     d.classCode & 0xff))
        try write("resource", d.resourceFile())
        if let r = d.resetMethods { try write("reset_method", r.joined(separator: " ") + "\n") }
        try Data(d.configSpace()).write(to: URL(fileURLWithPath: dir + "/config"))

        try link(dir + "/subsystem", to: root.path + "/bus/pci")
        try link(root.pciDevicesPath + "/" + d.address.description, to: dir)
        if let driver = d.driver {
            let driverDir = root.path + "/bus/pci/drivers/" + driver
            try fm.createDirectory(atPath: driverDir, withIntermediateDirectories: true)
            try link(dir + "/driver", to: driverDir)
            try link(driverDir + "/" + d.address.description, to: dir)
        }
        if let g = d.iommuGroup {
            let groupDir = root.iommuGroupPath(g)
            try fm.createDirectory(atPath: groupDir + "/devices", withIntermediateDirectories: true)
            try link(dir + "/iommu_group", to: groupDir)
            try link(groupDir + "/devices/" + d.address.description, to: dir)
        }
        if let s = d.sriov {
            try write("sriov_totalvfs", "\(s.totalVFs)\n")
            try write("sriov_numvfs", "\(s.numVFs)\n")
            try write("sriov_drivers_autoprobe", s.driversAutoprobe ? "1\n" : "0\n")
            try write("sriov_offset", "\(s.offset)\n")
            try write("sriov_stride", "\(s.stride)\n")
            try write("sriov_vf_device", "\(hex(s.vfDeviceID, 4))\n")
        }
        if let pf = d.physfn {
            guard let pfDir = devicePaths[pf] else { throw FixtureError("PF \(pf) of \(d.address) not added yet") }
            try link(dir + "/physfn", to: pfDir)
            try link(pfDir + "/virtfn\(d.vfIndex ?? 0)", to: dir)
        }
        return dir
    }

    /// Binds (or with nil unbinds) a function: the `driver` link and the driver's link back.
    /// Plain system calls, no Foundation path handling: the simulated kernel binds through here on
    /// every claim and release of the daemon benchmark.
    public func setDriver(_ a: PCIAddress, _ driver: String?) throws {
        guard let dir = devicePaths[a] else { throw FixtureError("no device \(a)") }
        if let old = Self.readLink(dir + "/driver") {
            let oldName = old.split(separator: "/").last.map(String.init) ?? old
            unlink(root.path + "/bus/pci/drivers/\(oldName)/\(a)")
            unlink(dir + "/driver")
        }
        if let driver {
            let driverDir = root.path + "/bus/pci/drivers/" + driver
            if mkdir(driverDir, 0o755) != 0 && errno != EEXIST {
                try fm.createDirectory(atPath: driverDir, withIntermediateDirectories: true)
            }
            try link(dir + "/driver", to: driverDir)
            try link(driverDir + "/" + a.description, to: dir)
        }
    }

    /// readlink(2): the link's target as written, nil when `path` is no symlink.
    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Creates an (empty) driver directory, as loading a module would.
    public func addDriver(_ name: String) throws {
        try fm.createDirectory(atPath: root.path + "/bus/pci/drivers/" + name, withIntermediateDirectories: true)
    }

    /// Removes a function: its directory, bus link, group link and driver link.
    public func removeDevice(_ a: PCIAddress) {
        guard let dir = devicePaths[a] else { return }
        try? setDriver(a, nil)
        if let g = try? fm.destinationOfSymbolicLink(atPath: dir + "/iommu_group") {
            let group = URL(fileURLWithPath: g).lastPathComponent
            try? fm.removeItem(atPath: root.iommuGroupsPath + "/\(group)/devices/\(a)")
            if (try? fm.contentsOfDirectory(atPath: root.iommuGroupsPath + "/\(group)/devices"))?.isEmpty ?? false {
                try? fm.removeItem(atPath: root.iommuGroupsPath + "/\(group)")
            }
        }
        try? fm.removeItem(atPath: root.pciDevicesPath + "/" + a.description)
        try? fm.removeItem(atPath: dir)
        devicePaths[a] = nil
    }

    /// A relative symlink, as the kernel makes them, from `path` to `target` (both absolute).
    private func link(_ path: String, to target: String) throws {
        let from = Self.components(path).dropLast()
        let to = Self.components(target)
        var common = 0
        while common < from.count && common < to.count && from[common] == to[common] { common += 1 }
        let rel = (Array(repeating: "..", count: from.count - common) + to[common...]).joined(separator: "/")
        unlink(path)
        guard symlink(rel, path) == 0 else {
            throw FixtureError("cannot link \(path) to \(rel): \(String(cString: strerror(errno)))")
        }
    }

    /// An absolute path's components with `.`, `..` and repeated slashes resolved by name.
    static func components(_ path: String) -> [Substring] {
        var parts: [Substring] = []
        for p in path.split(separator: "/") where p != "." {
            if p == ".." { _ = parts.popLast() } else { parts.append(p) }
        }
        return parts
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
