import ArgumentParser
import HostPCI
import PassageAPI
import PassageDaemon

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List the host's PCI devices, or show one.",
        subcommands: [DevicesList.self, DevicesShow.self],
        defaultSubcommand: DevicesList.self
    )
}

struct DevicesList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List PCI devices: address, ids, names, driver, IOMMU group, NUMA node, SR-IOV role.",
        discussion: "With --tree: physical functions with their virtual functions, grouped by IOMMU group."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions
    @OptionGroup var filters: FilterOptions

    @Flag(name: .long, help: "Show the topology: IOMMU groups, each PF with its VFs beneath it.")
    var tree = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let filter = try filters.makeFilter()
            let inventory = PCIInventory(root: sysfs.root)
            let all = try inventory.devices()
            let devices = all.filter(filter.matches)
            if tree {
                let groups = Topology.build(devices: devices, all: all, groups: inventory.groups(devices: all))
                if output.json { try printJSON(groups) } else { writeStdout(Topology.render(groups)) }
            } else if output.json {
                try printJSON(devices.map(DeviceInfo.init))
            } else {
                writeStdout(Self.table(devices).render(width: terminalWidth()))
            }
        }
    }

    static func table(_ devices: [PCIDevice]) -> Table {
        var t = Table(headers: ["ADDRESS", "IDS", "CLASS", "DRIVER", "GROUP", "NUMA", "SR-IOV", "DEVICE"])
        for d in devices {
            t.rows.append([
                d.address.description,
                "\(hex(d.vendorID, 4)):\(hex(d.deviceID, 4))",
                d.names.deviceClass ?? hex(d.classCode, 6),
                d.driver ?? "-",
                d.iommuGroup.map(String.init) ?? "-",
                d.numaNode.map(String.init) ?? "-",
                sriovSummary(d),
                deviceName(d),
            ])
        }
        return t
    }

    static func sriovSummary(_ d: PCIDevice) -> String {
        if let s = d.sriov { return "PF \(s.numVFs)/\(s.totalVFs) VFs" }
        if let pf = d.physfn { return "VF \(d.vfIndex.map(String.init) ?? "?") of \(pf)" }
        return "-"
    }
}

/// `Vendor Device` from pci.ids, or the ids where the database has no name.
func deviceName(_ d: PCIDevice) -> String {
    let vendor = d.names.vendor ?? "vendor \(hex(d.vendorID, 4))"
    let device = d.names.device ?? "device \(hex(d.deviceID, 4))"
    return vendor + " " + device
}

struct DevicesShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Everything known about one device."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("PCI address: 0000:3b:00.1 or 3b:00.1.", valueName: "ADDRESS"))
    var address: String

    func run() throws {
        try reportingErrors(json: output.json) {
            let addr = try parseAddress(address)
            let inventory = PCIInventory(root: sysfs.root)
            let device = try inventory.device(addr)
            if output.json {
                try printJSON(DeviceInfo(device))
            } else {
                var members: [PCIAddress] = []
                if let g = device.iommuGroup {
                    members = inventory.groupMembers(g) ?? []
                }
                writeStdout(Self.describe(device, groupMembers: members))
            }
        }
    }

    static func describe(_ d: PCIDevice, groupMembers: [PCIAddress]) -> String {
        var lines: [(String, String)] = []
        func add(_ k: String, _ v: String) { lines.append((k, v)) }
        add("address", d.address.description)
        add("device", deviceName(d))
        add("ids", "\(hex(d.vendorID, 4)):\(hex(d.deviceID, 4))" + (d.revision.map { " rev \(hex($0, 2))" } ?? ""))
        if let sv = d.subsystemVendorID, let sd = d.subsystemDeviceID {
            add("subsystem", "\(hex(sv, 4)):\(hex(sd, 4))" + (d.names.subsystem.map { " \($0)" } ?? ""))
        }
        add("class", hex(d.classCode, 6) + (d.names.deviceClass.map { " \($0)" } ?? ""))
        add("driver", d.driver ?? "none")
        if let o = d.driverOverride { add("driver_override", o) }
        add("iommu group", d.iommuGroup.map { g in
            "\(g)" + (groupMembers.count > 1 ? " (with " + groupMembers.filter { $0 != d.address }.map(\.description).joined(separator: ", ") + ")" : "")
        } ?? "none (no IOMMU)")
        add("numa node", d.numaNode.map(String.init) ?? "-")
        if !d.upstream.isEmpty { add("upstream", d.upstream.map(\.description).joined(separator: " → ")) }
        if d.isBridge { add("bridge", "yes") }
        for b in d.bars {
            add("bar \(b.index)", "\(b.kind.rawValue) at 0x\(hex(b.start, 1)), size \(formatSize(b.size))" + (b.prefetchable ? ", prefetchable" : ""))
        }
        if let r = d.romSize { add("expansion rom", formatSize(r)) }
        if let c = d.capabilities {
            add("capabilities", c.all.joined(separator: " "))
            if let m = c.msi { add("msi", "\(m.vectors) vectors" + (m.is64Bit ? ", 64-bit" : "") + (m.perVectorMasking ? ", maskable" : "") + (m.enabled ? ", enabled" : "")) }
            if let m = c.msix {
                add("msi-x", "\(m.tableSize) vectors, table in bar \(m.tableBAR) at 0x\(hex(m.tableOffset, 1)), pba in bar \(m.pbaBAR) at 0x\(hex(m.pbaOffset, 1))" + (m.enabled ? ", enabled" : ""))
            }
            if let e = c.pciExpress { add("pcie", e.portType.rawValue + (e.flr ? ", flr" : "")) }
            if let a = c.acs { add("acs", a.enabledNames.isEmpty ? "present, nothing enabled" : a.enabledNames.joined(separator: " ")) }
        } else {
            add("capabilities", "unknown (configuration space beyond 64 bytes needs root)")
        }
        if let r = d.resetMethods { add("reset methods", r.joined(separator: " ")) }
        if let s = d.sriov {
            add("sr-iov", "PF: \(s.numVFs) of \(s.totalVFs) VFs" + (s.driversAutoprobe.map { $0 ? ", autoprobe on" : ", autoprobe off" } ?? ""))
            for vf in s.vfs { add("  vf \(vf.index)", vf.address.description) }
        }
        if let pf = d.physfn { add("sr-iov", "VF \(d.vfIndex.map(String.init) ?? "?") of \(pf)") }
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width + 2, withPad: " ", startingAt: 0) + $0.1 }.joined(separator: "\n") + "\n"
    }
}

func formatSize(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = bytes
    var i = 0
    while v >= 1024 && v % 1024 == 0 && i < units.count - 1 { v /= 1024; i += 1 }
    return "\(v) \(units[i])"
}
