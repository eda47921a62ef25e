/// An IOMMU group: the smallest set of devices the IOMMU can isolate from the rest of the host.
/// VFIO hands a group to user space only whole.
public struct IOMMUGroup: Sendable, Hashable {
    public var number: Int
    public var devices: [PCIDevice]
    /// Group members that are not PCI functions (rare; listed as the kernel names them).
    public var otherMembers: [String]

    public init(number: Int, devices: [PCIDevice], otherMembers: [String] = []) {
        self.number = number
        self.devices = devices
        self.otherMembers = otherMembers
    }

    /// A member that stands in the way of handing the group to VFIO, and why.
    public struct Blocker: Sendable, Hashable {
        public var address: PCIAddress
        public var driver: String
    }

    /// Members bound to a driver that does its own DMA. The group is viable for VFIO when
    /// there are none: every member is unbound, on a vfio-pci driver, on pci-stub, or a bridge on pcieport
    /// (the drivers the kernel lets share a group with a user-owned device).
    public var blockers: [Blocker] {
        devices.compactMap { d in
            guard let driver = d.driver, !Self.allowsUserDMA(driver: driver, isBridge: d.isBridge) else { return nil }
            return Blocker(address: d.address, driver: driver)
        }
    }

    public var isViable: Bool { blockers.isEmpty }

    /// Drivers that leave the group's DMA to its user-space owner: vfio-pci and its variant
    /// drivers (`*_vfio_pci`), pci-stub, and pcieport on bridges.
    public static func allowsUserDMA(driver: String, isBridge: Bool) -> Bool {
        driver == "vfio-pci" || driver.hasSuffix("_vfio_pci") || driver == "pci-stub" || (isBridge && driver == "pcieport")
    }

    /// Groups from the devices' `iommu_group` links, for trees without `kernel/iommu_groups`.
    static func derive(from devices: [PCIDevice]) -> [IOMMUGroup] {
        var groups: [Int: [PCIDevice]] = [:]
        for d in devices { if let g = d.iommuGroup { groups[g, default: []].append(d) } }
        return groups.keys.sorted().map { IOMMUGroup(number: $0, devices: groups[$0]!) }
    }
}
