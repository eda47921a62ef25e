import HostPCI

#if canImport(Glibc)
import Glibc
#endif

/// The few sysfs reads NVMe provisioning needs, under a `SysfsRoot`: the PF's controller
/// (`nvme/nvmeN`), its driver, its VFs (`virtfnN`) and a controller's state.
enum NVMeSysfs {
    static func read(_ path: String) -> String? { SysfsRoot.readAttribute(path) }
    static func linkName(_ path: String) -> String? { SysfsRoot.linkName(path) }
    static func entries(_ path: String) -> [String] { SysfsRoot.entries(path) }
    static func exists(_ path: String) -> Bool { SysfsRoot.exists(path) }

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
