/// A PCI function as the CLI's `--json` and the API show it.
///
/// This is a contract: scripts rely on these keys. Extend it; never rename or remove a key.
/// Optional facts are always present as keys, `null` when unknown or not applicable.
public struct DeviceInfo: Codable, Sendable, Hashable {
    /// Canonical `DDDD:BB:DD.F`.
    public var address: String
    /// 4-digit lowercase hex.
    public var vendorId: String
    public var deviceId: String
    public var subsystemVendorId: String?
    public var subsystemDeviceId: String?
    /// 6-digit lowercase hex: base class, subclass, programming interface.
    public var classCode: String
    /// 2-digit lowercase hex.
    public var revision: String?
    public var vendorName: String?
    public var deviceName: String?
    public var subsystemName: String?
    public var className: String?
    public var driver: String?
    public var driverOverride: String?
    public var iommuGroup: Int?
    public var numaNode: Int?
    /// For a VF: its PF's address and its index among the PF's VFs.
    public var physfn: String?
    public var vfIndex: Int?
    /// For a PF.
    public var sriov: SRIOVInfo?
    public var isBridge: Bool
    /// Bridges from the root port down to the parent, root port first.
    public var upstream: [String]
    public var bars: [BARInfo]
    public var romSize: UInt64?
    /// Null when configuration space beyond 64 bytes could not be read (not root).
    public var capabilities: CapabilitiesInfo?
    public var resetMethods: [String]?

    public init(address: String, vendorId: String, deviceId: String, subsystemVendorId: String?,
                subsystemDeviceId: String?, classCode: String, revision: String?, vendorName: String?,
                deviceName: String?, subsystemName: String?, className: String?, driver: String?,
                driverOverride: String?, iommuGroup: Int?, numaNode: Int?, physfn: String?, vfIndex: Int?,
                sriov: SRIOVInfo?, isBridge: Bool, upstream: [String], bars: [BARInfo], romSize: UInt64?,
                capabilities: CapabilitiesInfo?, resetMethods: [String]?) {
        self.address = address
        self.vendorId = vendorId
        self.deviceId = deviceId
        self.subsystemVendorId = subsystemVendorId
        self.subsystemDeviceId = subsystemDeviceId
        self.classCode = classCode
        self.revision = revision
        self.vendorName = vendorName
        self.deviceName = deviceName
        self.subsystemName = subsystemName
        self.className = className
        self.driver = driver
        self.driverOverride = driverOverride
        self.iommuGroup = iommuGroup
        self.numaNode = numaNode
        self.physfn = physfn
        self.vfIndex = vfIndex
        self.sriov = sriov
        self.isBridge = isBridge
        self.upstream = upstream
        self.bars = bars
        self.romSize = romSize
        self.capabilities = capabilities
        self.resetMethods = resetMethods
    }
}

public struct SRIOVInfo: Codable, Sendable, Hashable {
    public var totalVFs: Int
    public var numVFs: Int
    public var driversAutoprobe: Bool?
    public var vfOffset: Int?
    public var vfStride: Int?
    public var vfDeviceId: String?
    /// Addresses of the VFs that exist now, in VF index order.
    public var vfs: [String]
    /// Per-VF BARs (sizes for one VF's share are `size / totalVFs`).
    public var vfBars: [BARInfo]

    public init(totalVFs: Int, numVFs: Int, driversAutoprobe: Bool?, vfOffset: Int?, vfStride: Int?,
                vfDeviceId: String?, vfs: [String], vfBars: [BARInfo]) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.driversAutoprobe = driversAutoprobe
        self.vfOffset = vfOffset
        self.vfStride = vfStride
        self.vfDeviceId = vfDeviceId
        self.vfs = vfs
        self.vfBars = vfBars
    }
}

public struct BARInfo: Codable, Sendable, Hashable {
    public var index: Int
    /// `io`, `memory32` or `memory64`.
    public var type: String
    /// Start address as `0x`-prefixed lowercase hex (a string: 64-bit values do not fit JSON numbers everywhere).
    public var start: String
    public var size: UInt64
    public var prefetchable: Bool

    public init(index: Int, type: String, start: String, size: UInt64, prefetchable: Bool) {
        self.index = index
        self.type = type
        self.start = start
        self.size = size
        self.prefetchable = prefetchable
    }
}

public struct CapabilitiesInfo: Codable, Sendable, Hashable {
    public struct MSI: Codable, Sendable, Hashable {
        public var vectors: Int
        public var is64Bit: Bool
        public var perVectorMasking: Bool
        public var enabled: Bool
        public init(vectors: Int, is64Bit: Bool, perVectorMasking: Bool, enabled: Bool) {
            self.vectors = vectors
            self.is64Bit = is64Bit
            self.perVectorMasking = perVectorMasking
            self.enabled = enabled
        }
    }

    public struct MSIX: Codable, Sendable, Hashable {
        public var tableSize: Int
        public var tableBar: Int
        public var tableOffset: UInt32
        public var pbaBar: Int
        public var pbaOffset: UInt32
        public var enabled: Bool
        public init(tableSize: Int, tableBar: Int, tableOffset: UInt32, pbaBar: Int, pbaOffset: UInt32, enabled: Bool) {
            self.tableSize = tableSize
            self.tableBar = tableBar
            self.tableOffset = tableOffset
            self.pbaBar = pbaBar
            self.pbaOffset = pbaOffset
            self.enabled = enabled
        }
    }

    public struct PCIe: Codable, Sendable, Hashable {
        /// `endpoint`, `root-port`, `upstream-port`, `downstream-port`, `pcie-to-pci-bridge`, …
        public var portType: String
        public var flr: Bool
        public init(portType: String, flr: Bool) {
            self.portType = portType
            self.flr = flr
        }
    }

    public struct SRIOV: Codable, Sendable, Hashable {
        public var initialVFs: Int
        public var totalVFs: Int
        public var numVFs: Int
        public var firstVFOffset: Int
        public var vfStride: Int
        public var vfDeviceId: String
        public init(initialVFs: Int, totalVFs: Int, numVFs: Int, firstVFOffset: Int, vfStride: Int, vfDeviceId: String) {
            self.initialVFs = initialVFs
            self.totalVFs = totalVFs
            self.numVFs = numVFs
            self.firstVFOffset = firstVFOffset
            self.vfStride = vfStride
            self.vfDeviceId = vfDeviceId
        }
    }

    public struct ACS: Codable, Sendable, Hashable {
        /// Raw ACS Capability and Control registers, 4-digit hex.
        public var capability: String
        public var control: String
        /// Controls enabled: `sv`, `tb`, `rr`, `cr`, `uf`, `ec`, `dt`.
        public var enabled: [String]
        public init(capability: String, control: String, enabled: [String]) {
            self.capability = capability
            self.control = control
            self.enabled = enabled
        }
    }

    public var msi: MSI?
    public var msix: MSIX?
    public var pcie: PCIe?
    public var sriov: SRIOV?
    public var acs: ACS?
    public var ari: Bool
    /// Every capability present: `pm`, `msi`, `pcie`, `msix`, … and `ext:aer`, `ext:sriov`, …
    public var list: [String]

    public init(msi: MSI?, msix: MSIX?, pcie: PCIe?, sriov: SRIOV?, acs: ACS?, ari: Bool, list: [String]) {
        self.msi = msi
        self.msix = msix
        self.pcie = pcie
        self.sriov = sriov
        self.acs = acs
        self.ari = ari
        self.list = list
    }
}

/// An IOMMU group as `passage groups --json` shows it.
public struct IOMMUGroupInfo: Codable, Sendable, Hashable {
    public struct Member: Codable, Sendable, Hashable {
        public var address: String
        public var driver: String?
        public var isBridge: Bool
        public init(address: String, driver: String?, isBridge: Bool) {
            self.address = address
            self.driver = driver
            self.isBridge = isBridge
        }
    }

    public var group: Int
    public var devices: [Member]
    /// Members that are not PCI functions, as the kernel names them.
    public var otherMembers: [String]
    /// True when every member is unbound, on vfio-pci (or a variant), on pci-stub, or a bridge on pcieport.
    public var viable: Bool
    /// Members that keep the group from being viable, with their drivers.
    public var blockers: [Member]

    public init(group: Int, devices: [Member], otherMembers: [String], viable: Bool, blockers: [Member]) {
        self.group = group
        self.devices = devices
        self.otherMembers = otherMembers
        self.viable = viable
        self.blockers = blockers
    }
}

/// An error as the CLI's `--json` and the API report it.
public struct ErrorInfo: Codable, Sendable, Hashable {
    /// Stable machine-readable code, e.g. `invalid-address`, `device-not-found`.
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// `passage devices --tree --json`: devices grouped by IOMMU group, each PF with its VFs.
public struct TopologyGroup: Codable, Sendable, Hashable {
    public struct Node: Codable, Sendable, Hashable {
        public var address: String
        public var vendorId: String
        public var deviceId: String
        public var name: String?
        public var driver: String?
        public var iommuGroup: Int?
        public var vfIndex: Int?
        public var upstream: [String]
        /// For a PF: its VFs (each also a node), in index order.
        public var vfs: [Node]?

        public init(address: String, vendorId: String, deviceId: String, name: String?, driver: String?,
                    iommuGroup: Int?, vfIndex: Int?, upstream: [String], vfs: [Node]?) {
            self.address = address
            self.vendorId = vendorId
            self.deviceId = deviceId
            self.name = name
            self.driver = driver
            self.iommuGroup = iommuGroup
            self.vfIndex = vfIndex
            self.upstream = upstream
            self.vfs = vfs
        }
    }

    /// Null for devices without an IOMMU group.
    public var group: Int?
    public var viable: Bool?
    public var devices: [Node]

    public init(group: Int?, viable: Bool?, devices: [Node]) {
        self.group = group
        self.viable = viable
        self.devices = devices
    }
}
