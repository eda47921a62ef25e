import HostPCI

/// One PCI function to write into a `SysfsFixture`.
public struct FixtureDevice: Sendable {
    public var address: PCIAddress
    /// The bridge this function sits behind; nil for the root bus.
    public var parent: PCIAddress?
    /// For root-bus devices: the host bridge directory's bus number (default: the device's bus).
    public var hostBridgeBus: UInt8?
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16
    public var subsystemDeviceID: UInt16
    public var classCode: UInt32
    public var revision: UInt8 = 1
    public var driver: String?
    public var driverOverride: String?
    public var iommuGroup: Int?
    public var numaNode: Int = -1
    public var bars: [FixtureBAR] = []
    public var capabilities: [FixtureCapability] = []
    public var resetMethods: [String]?
    /// Header type 1 (PCI-to-PCI bridge) with these bus numbers.
    public var bridge: (secondary: UInt8, subordinate: UInt8)?
    public var sriov: FixtureSRIOV?
    public var physfn: PCIAddress?
    public var vfIndex: Int?

    public init(_ address: PCIAddress, vendor: UInt16, device: UInt16, class classCode: UInt32,
                subsystemVendor: UInt16? = nil, subsystemDevice: UInt16? = nil) {
        self.address = address
        self.vendorID = vendor
        self.deviceID = device
        self.classCode = classCode
        self.subsystemVendorID = subsystemVendor ?? vendor
        self.subsystemDeviceID = subsystemDevice ?? device
    }

    var isExpress: Bool { capabilities.contains { if case .pcie = $0 { return true }; return false } }

    /// sysfs `resource`: 13 lines for an endpoint (BARs 0–5, ROM, SR-IOV BARs 7–12), 17 for a bridge.
    func resourceFile() -> String {
        var lines = Array(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000", count: bridge == nil ? 13 : 17)
        func line(_ start: UInt64, _ size: UInt64, _ flags: UInt64) -> String {
            "0x\(hex(start, 16)) 0x\(hex(start + size - 1, 16)) 0x\(hex(flags, 16))"
        }
        for b in bars where b.index < 6 { lines[b.index] = line(b.start, b.size, b.resourceFlags) }
        if let s = sriov { for b in s.vfBars where b.index < 6 { lines[7 + b.index] = line(b.start, b.size * UInt64(s.totalVFs), b.resourceFlags) } }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Configuration space: 4 KiB for PCI Express functions, 256 bytes otherwise.
    func configSpace() -> [UInt8] {
        var c = ConfigBytes(count: isExpress ? 4096 : 256)
        c.set16(0x00, vendorID)
        c.set16(0x02, deviceID)
        c.set16(0x04, 0x0006)
        c.set8(0x08, revision)
        c.set8(0x09, UInt8(classCode & 0xff))
        c.set8(0x0a, UInt8((classCode >> 8) & 0xff))
        c.set8(0x0b, UInt8((classCode >> 16) & 0xff))
        if let b = bridge {
            c.set8(0x0e, 1)
            c.set8(0x18, address.bus)
            c.set8(0x19, b.secondary)
            c.set8(0x1a, b.subordinate)
        } else {
            c.set8(0x0e, 0)
            for b in bars {
                let off = 0x10 + 4 * b.index
                switch b.kind {
                case .io: c.set32(off, UInt32(truncatingIfNeeded: b.start) | 1)
                case .memory32: c.set32(off, UInt32(truncatingIfNeeded: b.start) | (b.prefetchable ? 8 : 0))
                case .memory64:
                    c.set32(off, UInt32(truncatingIfNeeded: b.start) | 4 | (b.prefetchable ? 8 : 0))
                    c.set32(off + 4, UInt32(truncatingIfNeeded: b.start >> 32))
                }
            }
            c.set16(0x2c, subsystemVendorID)
            c.set16(0x2e, subsystemDeviceID)
        }
        let standard = capabilities.filter { !$0.isExtended }
        let extended = capabilities.filter(\.isExtended)
        if !standard.isEmpty {
            c.set16(0x06, 0x0010)  // status: capability list
            c.set8(0x34, 0x40)
            for (i, cap) in standard.enumerated() {
                let pos = 0x40 + 0x18 * i
                c.set8(pos, cap.id)
                c.set8(pos + 1, i == standard.count - 1 ? 0 : UInt8(pos + 0x18))
                cap.write(into: &c, at: pos)
            }
        }
        if isExpress {
            for (i, cap) in extended.enumerated() {
                let pos = 0x100 + 0x40 * i
                let next = i == extended.count - 1 ? 0 : UInt32(pos + 0x40)
                c.set32(pos, UInt32(cap.id) | 1 << 16 | next << 20)
                cap.write(into: &c, at: pos)
            }
        }
        return c.bytes
    }
}

public struct FixtureBAR: Sendable {
    public var index: Int
    public var kind: BAR.Kind
    public var start: UInt64
    public var size: UInt64
    public var prefetchable: Bool

    public init(_ index: Int, _ kind: BAR.Kind, start: UInt64, size: UInt64, prefetchable: Bool = false) {
        self.index = index
        self.kind = kind
        self.start = start
        self.size = size
        self.prefetchable = prefetchable
    }

    var resourceFlags: UInt64 {
        switch kind {
        case .io: 0x101
        case .memory32: 0x40200 | (prefetchable ? 0x2000 : 0)
        case .memory64: 0x140200 | (prefetchable ? 0x2000 : 0)
        }
    }
}

public struct FixtureSRIOV: Sendable {
    public var totalVFs: Int
    public var numVFs: Int
    public var driversAutoprobe: Bool
    public var offset: Int
    public var stride: Int
    public var vfDeviceID: UInt16
    /// One VF's BARs (the sysfs `resource` shows them multiplied by totalVFs).
    public var vfBars: [FixtureBAR]

    public init(totalVFs: Int, numVFs: Int, driversAutoprobe: Bool = true, offset: Int = 1, stride: Int = 1,
                vfDeviceID: UInt16, vfBars: [FixtureBAR] = []) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.driversAutoprobe = driversAutoprobe
        self.offset = offset
        self.stride = stride
        self.vfDeviceID = vfDeviceID
        self.vfBars = vfBars
    }
}

/// Capabilities written into a fixture's configuration space.
public enum FixtureCapability: Sendable {
    case powerManagement
    case msi(vectors: Int, is64Bit: Bool = true, maskable: Bool = true)
    case msix(tableSize: Int, tableBAR: Int = 0, tableOffset: UInt32 = 0x2000, pbaBAR: Int = 0, pbaOffset: UInt32 = 0x3000)
    /// PCI Express with a port type (0 endpoint, 4 root port, 6 downstream, 7 PCIe-to-PCI bridge, 9 RC integrated).
    case pcie(portType: Int, flr: Bool = true)
    case sriov(initialVFs: Int, totalVFs: Int, numVFs: Int, offset: Int, stride: Int, vfDeviceID: UInt16)
    case acs(capability: UInt16, control: UInt16)
    case ari
    case aer

    var isExtended: Bool {
        switch self {
        case .sriov, .acs, .ari, .aer: true
        default: false
        }
    }

    var id: UInt8 {
        switch self {
        case .powerManagement: 0x01
        case .msi: 0x05
        case .msix: 0x11
        case .pcie: 0x10
        case .sriov: 0x10
        case .acs: 0x0d
        case .ari: 0x0e
        case .aer: 0x01
        }
    }

    func write(into c: inout ConfigBytes, at pos: Int) {
        switch self {
        case .powerManagement:
            c.set16(pos + 2, 0x0003)
        case let .msi(vectors, is64Bit, maskable):
            let log2 = UInt16(max(0, Int.bitWidth - vectors.leadingZeroBitCount - 1))
            c.set16(pos + 2, log2 << 1 | (is64Bit ? 0x80 : 0) | (maskable ? 0x100 : 0))
        case let .msix(tableSize, tableBAR, tableOffset, pbaBAR, pbaOffset):
            c.set16(pos + 2, UInt16(tableSize - 1))
            c.set32(pos + 4, tableOffset | UInt32(tableBAR))
            c.set32(pos + 8, pbaOffset | UInt32(pbaBAR))
        case let .pcie(portType, flr):
            c.set16(pos + 2, UInt16(portType) << 4 | 2)
            c.set32(pos + 4, flr ? 1 << 28 : 0)
        case let .sriov(initialVFs, totalVFs, numVFs, offset, stride, vfDeviceID):
            c.set16(pos + 0x0c, UInt16(initialVFs))
            c.set16(pos + 0x0e, UInt16(totalVFs))
            c.set16(pos + 0x10, UInt16(numVFs))
            c.set16(pos + 0x14, UInt16(offset))
            c.set16(pos + 0x16, UInt16(stride))
            c.set16(pos + 0x1a, vfDeviceID)
        case let .acs(capability, control):
            c.set16(pos + 4, capability)
            c.set16(pos + 6, control)
        case .ari, .aer:
            break
        }
    }
}

struct ConfigBytes {
    var bytes: [UInt8]
    init(count: Int) { bytes = Array(repeating: 0, count: count) }
    mutating func set8(_ off: Int, _ v: UInt8) { bytes[off] = v }
    mutating func set16(_ off: Int, _ v: UInt16) { bytes[off] = UInt8(v & 0xff); bytes[off + 1] = UInt8(v >> 8) }
    mutating func set32(_ off: Int, _ v: UInt32) {
        for i in 0..<4 { bytes[off + i] = UInt8((v >> (8 * UInt32(i))) & 0xff) }
    }
}
