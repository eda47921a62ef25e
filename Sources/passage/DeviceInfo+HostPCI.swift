import HostPCI
import PassageAPI

// The one mapping from HostPCI's model to the wire types. (When the daemon arrives this moves
// beside its inventory service, which the CLI's local mode will share.)

extension DeviceInfo {
    init(_ d: PCIDevice) {
        self.init(
            address: d.address.description,
            vendorId: hex(d.vendorID, 4),
            deviceId: hex(d.deviceID, 4),
            subsystemVendorId: d.subsystemVendorID.map { hex($0, 4) },
            subsystemDeviceId: d.subsystemDeviceID.map { hex($0, 4) },
            classCode: hex(d.classCode, 6),
            revision: d.revision.map { hex($0, 2) },
            vendorName: d.names.vendor,
            deviceName: d.names.device,
            subsystemName: d.names.subsystem,
            className: d.names.deviceClass,
            driver: d.driver,
            driverOverride: d.driverOverride,
            iommuGroup: d.iommuGroup,
            numaNode: d.numaNode,
            physfn: d.physfn?.description,
            vfIndex: d.vfIndex,
            sriov: d.sriov.map(SRIOVInfo.init),
            isBridge: d.isBridge,
            upstream: d.upstream.map(\.description),
            bars: d.bars.map(BARInfo.init),
            romSize: d.romSize,
            capabilities: d.capabilities.map(CapabilitiesInfo.init),
            resetMethods: d.resetMethods)
    }
}

extension SRIOVInfo {
    init(_ s: SRIOVPhysicalFunction) {
        self.init(totalVFs: s.totalVFs, numVFs: s.numVFs, driversAutoprobe: s.driversAutoprobe,
                  vfOffset: s.vfOffset, vfStride: s.vfStride, vfDeviceId: s.vfDeviceID.map { hex($0, 4) },
                  vfs: s.vfs.map(\.address.description), vfBars: s.vfBars.map(BARInfo.init))
    }
}

extension BARInfo {
    init(_ b: BAR) {
        self.init(index: b.index, type: b.kind.rawValue, start: "0x" + hex(b.start, 1), size: b.size,
                  prefetchable: b.prefetchable)
    }
}

extension CapabilitiesInfo {
    init(_ c: PCICapabilities) {
        self.init(
            msi: c.msi.map { .init(vectors: $0.vectors, is64Bit: $0.is64Bit, perVectorMasking: $0.perVectorMasking, enabled: $0.enabled) },
            msix: c.msix.map { .init(tableSize: $0.tableSize, tableBar: $0.tableBAR, tableOffset: $0.tableOffset,
                                     pbaBar: $0.pbaBAR, pbaOffset: $0.pbaOffset, enabled: $0.enabled) },
            pcie: c.pciExpress.map { .init(portType: $0.portType.rawValue, flr: $0.flr) },
            sriov: c.sriov.map { .init(initialVFs: $0.initialVFs, totalVFs: $0.totalVFs, numVFs: $0.numVFs,
                                       firstVFOffset: $0.firstVFOffset, vfStride: $0.vfStride, vfDeviceId: hex($0.vfDeviceID, 4)) },
            acs: c.acs.map { .init(capability: hex($0.capability, 4), control: hex($0.control, 4), enabled: $0.enabledNames) },
            ari: c.ari,
            list: c.all)
    }
}

extension IOMMUGroupInfo {
    init(_ g: IOMMUGroup) {
        func member(_ d: PCIDevice) -> Member { Member(address: d.address.description, driver: d.driver, isBridge: d.isBridge) }
        let blockers = Set(g.blockers.map(\.address))
        self.init(group: g.number, devices: g.devices.map(member), otherMembers: g.otherMembers,
                  viable: blockers.isEmpty, blockers: g.devices.filter { blockers.contains($0.address) }.map(member))
    }
}
