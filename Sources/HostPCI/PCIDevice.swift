/// One PCI function as sysfs and its configuration space describe it.
public struct PCIDevice: Sendable, Hashable {
    public var address: PCIAddress
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// 24-bit class code: base class, subclass, programming interface.
    public var classCode: UInt32
    public var revision: UInt8?
    public var names: PCINames
    /// The bound driver's name (`driver` link), nil when unbound.
    public var driver: String?
    /// `driver_override`, nil when unset (the kernel shows unset as `(null)` or empty).
    public var driverOverride: String?
    public var iommuGroup: Int?
    /// NUMA node, nil where the kernel reports -1 or has no node.
    public var numaNode: Int?
    /// Standard BARs 0–5 that have an address range; the upper half of a 64-bit BAR is not listed.
    public var bars: [BAR]
    /// Expansion ROM size, if the device has one.
    public var romSize: UInt64?
    /// Capabilities from configuration space; nil when only the first 64 bytes are readable
    /// (the kernel hides the rest from non-root readers).
    public var capabilities: PCICapabilities?
    /// The kernel's `reset_method` list, nil where the kernel or device has none.
    public var resetMethods: [String]?
    /// SR-IOV physical function facts, when this is a PF (`sriov_totalvfs` exists).
    public var sriov: SRIOVPhysicalFunction?
    /// For a virtual function: its PF (`physfn`).
    public var physfn: PCIAddress?
    /// For a virtual function: its index N in the PF's `virtfnN` links.
    public var vfIndex: Int?
    /// Bridges from the root port down to this device's parent (empty for root-complex devices).
    public var upstream: [PCIAddress]
    /// Header type 1 (PCI-to-PCI bridge) or class 0x0604.
    public var isBridge: Bool

    public var isVirtualFunction: Bool { physfn != nil }
    public var isPhysicalFunction: Bool { sriov != nil }
    /// Base class and subclass, e.g. 0x0200 for an Ethernet controller.
    public var classID: UInt16 { UInt16(classCode >> 8) }
}

/// Names from the PCI ID database (pci.ids) as libpci finds them; nil when unknown.
public struct PCINames: Sendable, Hashable {
    public var vendor: String?
    public var device: String?
    public var subsystem: String?
    public var deviceClass: String?

    public init(vendor: String? = nil, device: String? = nil, subsystem: String? = nil, deviceClass: String? = nil) {
        self.vendor = vendor
        self.device = device
        self.subsystem = subsystem
        self.deviceClass = deviceClass
    }
}

/// A base address register's current assignment, from sysfs `resource`.
public struct BAR: Sendable, Hashable {
    public enum Kind: String, Sendable { case io, memory32, memory64 }
    public var index: Int
    public var start: UInt64
    public var size: UInt64
    public var kind: Kind
    public var prefetchable: Bool

    public init(index: Int, start: UInt64, size: UInt64, kind: Kind, prefetchable: Bool) {
        self.index = index
        self.start = start
        self.size = size
        self.kind = kind
        self.prefetchable = prefetchable
    }

    // Linux IORESOURCE_* flags as shown in sysfs `resource`.
    static let ioFlag: UInt64 = 0x100
    static let memFlag: UInt64 = 0x200
    static let prefetchFlag: UInt64 = 0x2000
    static let mem64Flag: UInt64 = 0x0010_0000

    /// Parses sysfs `resource`: one `0xSTART 0xEND 0xFLAGS` line per resource, empty slots all zero.
    /// Returns (line index, BAR) for each non-empty slot.
    static func parse(resource bytes: [UInt8]) -> [(Int, BAR)] {
        var result: [(Int, BAR)] = []
        var index = 0
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            defer { index += 1 }
            let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 3, omittingEmptySubsequences: true)
            guard fields.count >= 3, let start = parseHex(fields[0]), let end = parseHex(fields[1]),
                  let flags = parseHex(fields[2]), let bar = BAR(index: index, start: start, end: end, flags: flags) else { continue }
            result.append((index, bar))
        }
        return result
    }

    /// A BAR from one `resource` line; nil for an empty slot.
    init?(index: Int, start: UInt64, end: UInt64, flags: UInt64) {
        guard end > start || (end == start && start != 0) else { return nil }
        let kind: Kind
        if flags & Self.ioFlag != 0 { kind = .io } else if flags & Self.mem64Flag != 0 { kind = .memory64 } else { kind = .memory32 }
        self.init(index: index, start: start, size: end - start + 1, kind: kind, prefetchable: flags & Self.prefetchFlag != 0)
    }
}

/// SR-IOV state of a physical function, from its sysfs attributes.
public struct SRIOVPhysicalFunction: Sendable, Hashable {
    public var totalVFs: Int
    public var numVFs: Int
    /// `sriov_drivers_autoprobe`: whether host drivers bind new VFs automatically.
    public var driversAutoprobe: Bool?
    /// VF offset and stride from `sriov_offset` / `sriov_stride`, where the kernel has them.
    public var vfOffset: Int?
    public var vfStride: Int?
    /// `sriov_vf_device`: the device id the VFs will have.
    public var vfDeviceID: UInt16?
    /// The VFs that exist now, by index.
    public var vfs: [VirtualFunctionLink]
    /// BARs each VF will have (sysfs `resource` entries 7–12: the SR-IOV BARs, sized for all VFs).
    public var vfBars: [BAR]
}

/// A PF's `virtfnN` link.
public struct VirtualFunctionLink: Sendable, Hashable {
    public var index: Int
    public var address: PCIAddress
}

extension PCIDevice {
    /// Whether the class code starts with `prefix`, 2, 4 or 6 hex digits (`02` network, `0108`
    /// NVMe, `010802`); the one class test of the CLI's filters, claim selectors and policy rules.
    public func classCode(hasPrefix prefix: String) -> Bool {
        hex(classCode, 6).hasPrefix(prefix.lowercased())
    }
}
