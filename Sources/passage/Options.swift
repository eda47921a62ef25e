import ArgumentParser
import HostPCI

/// `--json` for scripts, a table for people.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of a table (also for errors, on stderr).")
    var json = false
}

/// `--sysfs-root` for fixture trees.
struct SysfsOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Read devices from this sysfs-shaped tree instead of /sys.", valueName: "DIR"))
    var sysfsRoot: String = "/sys"

    var root: SysfsRoot { SysfsRoot(path: sysfsRoot) }
}

/// Filters shared by `devices` and `devices --tree`.
struct FilterOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Class code prefix in hex: 02 (network), 0108 (NVMe), 010802.", valueName: "HEX"))
    var `class`: String?

    @Option(name: .long, help: ArgumentHelp("Vendor id, or vendor:device, in hex: 8086 or 8086:1572.", valueName: "ID"))
    var vendor: String?

    @Option(name: .long, help: ArgumentHelp("Bound driver name; 'none' for unbound devices.", valueName: "NAME"))
    var driver: String?

    @Flag(name: .long, help: "Only SR-IOV physical and virtual functions.")
    var sriov = false

    func makeFilter() throws(CLIError) -> DeviceFilter {
        var f = DeviceFilter()
        if let c = `class` {
            let digits = c.lowercased().hasPrefix("0x") ? String(c.dropFirst(2)) : c
            guard [2, 4, 6].contains(digits.count), UInt32(digits, radix: 16) != nil else {
                throw CLIError.usage("--class \(c): expected 2, 4 or 6 hex digits (02 network, 0108 NVMe, 010802)")
            }
            f.classPrefix = digits
        }
        if let v = vendor {
            let parts = v.split(separator: ":", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), parts.allSatisfy({ $0.count == 4 }),
                  let vid = UInt16(parts[0], radix: 16) else {
                throw CLIError.usage("--vendor \(v): expected 4 hex digits, optionally :4 more (8086 or 8086:1572)")
            }
            f.vendorID = vid
            if parts.count == 2 {
                guard let did = UInt16(parts[1], radix: 16) else {
                    throw CLIError.usage("--vendor \(v): expected 4 hex digits, optionally :4 more (8086 or 8086:1572)")
                }
                f.deviceID = did
            }
        }
        f.driver = driver
        f.sriovOnly = sriov
        return f
    }
}

struct DeviceFilter {
    var classPrefix: String?
    var vendorID: UInt16?
    var deviceID: UInt16?
    var driver: String?
    var sriovOnly = false

    func matches(_ d: PCIDevice) -> Bool {
        if let c = classPrefix, !d.classCode(hasPrefix: c) { return false }
        if let v = vendorID, d.vendorID != v { return false }
        if let v = deviceID, d.deviceID != v { return false }
        if let drv = driver {
            if drv == "none" { if d.driver != nil { return false } } else if d.driver != drv { return false }
        }
        if sriovOnly && !d.isPhysicalFunction && !d.isVirtualFunction { return false }
        return true
    }
}
