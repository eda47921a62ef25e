import HostPCI

/// Fixture trees shared by tests and benchmarks.
public enum StandardFixtures {
    static func a(_ s: String) -> PCIAddress { try! PCIAddress(parsing: s) }

    /// A small host with what the inventory must handle:
    /// - 0000:00:00.0 host bridge (group 0)
    /// - 0000:00:1c.0 PCIe root port (pcieport, group 1) → 0000:01:00.0 an SR-IOV PF (i40e, group 10, NUMA 0,
    ///   64 total VFs, 2 enabled: 0000:01:02.0 on vfio-pci in group 20, 0000:01:02.1 on iavf in group 21)
    /// - 0000:00:1e.0 PCIe-to-PCI bridge (no driver) with two functions behind it, 0000:05:00.0 (e1000) and
    ///   0000:05:00.1 (no driver): bridge and both functions share group 5
    /// - 0000:00:03.0 a device with no driver (group 3)
    /// - 0000:00:04.0 an NVMe controller on vfio-pci with `driver_override` set (group 4)
    public static func small(in fixture: SysfsFixture) throws {
        var host = FixtureDevice(a("00:00.0"), vendor: 0x8086, device: 0x29c0, class: 0x060000)
        host.iommuGroup = 0
        try fixture.add(host)

        var rp = FixtureDevice(a("00:1c.0"), vendor: 0x8086, device: 0x2940, class: 0x060400)
        rp.bridge = (1, 1)
        rp.driver = "pcieport"
        rp.iommuGroup = 1
        rp.capabilities = [.powerManagement, .msi(vectors: 1), .pcie(portType: 4, flr: false), .acs(capability: 0x1f, control: 0x1d)]
        try fixture.add(rp)

        var pf = FixtureDevice(a("01:00.0"), vendor: 0x8086, device: 0x1572, class: 0x020000,
                               subsystemVendor: 0x8086, subsystemDevice: 0x0001)
        pf.parent = rp.address
        pf.revision = 0x02
        pf.driver = "i40e"
        pf.iommuGroup = 10
        pf.numaNode = 0
        pf.resetMethods = ["flr", "bus"]
        pf.bars = [FixtureBAR(0, .memory64, start: 0xfb00_0000, size: 0x80_0000, prefetchable: true),
                   FixtureBAR(3, .memory64, start: 0xfb80_0000, size: 0x8000, prefetchable: true)]
        pf.capabilities = [.powerManagement, .msi(vectors: 1), .msix(tableSize: 129, tableBAR: 3, tableOffset: 0, pbaBAR: 3, pbaOffset: 0x1000),
                           .pcie(portType: 0), .aer, .ari, .sriov(initialVFs: 64, totalVFs: 64, numVFs: 2, offset: 16, stride: 1, vfDeviceID: 0x154c)]
        pf.sriov = FixtureSRIOV(totalVFs: 64, numVFs: 2, offset: 16, stride: 1, vfDeviceID: 0x154c,
                                vfBars: [FixtureBAR(0, .memory64, start: 0xfa00_0000, size: 0x1_0000, prefetchable: true)])
        try fixture.add(pf)
        for (i, (driver, group)) in [("vfio-pci", 20), ("iavf", 21)].enumerated() {
            var vf = FixtureDevice(a("01:02.\(i)"), vendor: 0x8086, device: 0x154c, class: 0x020000)
            vf.parent = rp.address
            vf.driver = driver
            vf.iommuGroup = group
            vf.numaNode = 0
            vf.physfn = pf.address
            vf.vfIndex = i
            vf.bars = [FixtureBAR(0, .memory64, start: 0xfa00_0000 + UInt64(i) * 0x1_0000, size: 0x1_0000, prefetchable: true)]
            vf.capabilities = [.msix(tableSize: 5, tableBAR: 0, tableOffset: 0x8000, pbaBAR: 0, pbaOffset: 0x9000), .pcie(portType: 0), .ari]
            if driver == "vfio-pci" { vf.driverOverride = "vfio-pci" }
            try fixture.add(vf)
        }

        var pciBridge = FixtureDevice(a("00:1e.0"), vendor: 0x8086, device: 0x244e, class: 0x060401)
        pciBridge.bridge = (5, 5)
        pciBridge.iommuGroup = 5
        pciBridge.capabilities = [.pcie(portType: 7, flr: false)]
        try fixture.add(pciBridge)
        var nic = FixtureDevice(a("05:00.0"), vendor: 0x8086, device: 0x100e, class: 0x020000)
        nic.parent = pciBridge.address
        nic.driver = "e1000"
        nic.iommuGroup = 5
        nic.bars = [FixtureBAR(0, .memory32, start: 0xfe00_0000, size: 0x2_0000), FixtureBAR(1, .io, start: 0xc000, size: 0x40)]
        nic.capabilities = [.powerManagement, .msi(vectors: 1, is64Bit: true, maskable: false)]
        try fixture.add(nic)
        var second = FixtureDevice(a("05:00.1"), vendor: 0x8086, device: 0x100e, class: 0x020000)
        second.parent = pciBridge.address
        second.iommuGroup = 5
        try fixture.add(second)

        var unbound = FixtureDevice(a("00:03.0"), vendor: 0x1af4, device: 0x1041, class: 0x020000)
        unbound.iommuGroup = 3
        unbound.capabilities = [.msix(tableSize: 3, tableBAR: 1, tableOffset: 0, pbaBAR: 1, pbaOffset: 0x800)]
        try fixture.add(unbound)

        var nvme = FixtureDevice(a("00:04.0"), vendor: 0x8086, device: 0x0953, class: 0x010802)
        nvme.driver = "vfio-pci"
        nvme.driverOverride = "vfio-pci"
        nvme.iommuGroup = 4
        nvme.numaNode = 1
        nvme.bars = [FixtureBAR(0, .memory64, start: 0xfd00_0000, size: 0x4000)]
        nvme.capabilities = [.powerManagement, .msix(tableSize: 32, tableBAR: 0, tableOffset: 0x2000, pbaBAR: 0, pbaOffset: 0x3000), .pcie(portType: 0)]
        nvme.resetMethods = ["flr"]
        try fixture.add(nvme)
    }

    /// `pfs` SR-IOV PFs, each on the root bus of its own host bridge with `vfsPerPF` VFs (ARI, offset 1,
    /// stride 1), every function in its own IOMMU group. 16 × 255 gives the 4,096-function benchmark tree.
    public static func large(in fixture: SysfsFixture, pfs: Int = 16, vfsPerPF: Int = 255) throws {
        precondition(vfsPerPF <= 255)
        var group = 0
        for p in 0..<pfs {
            let bus = UInt8(1 + p)
            let pfAddress = try PCIAddress(bus: bus, device: 0, function: 0)
            var pf = FixtureDevice(pfAddress, vendor: 0x8086, device: 0x1572, class: 0x020000)
            pf.driver = "i40e"
            pf.iommuGroup = group; group += 1
            pf.numaNode = p % 2
            pf.resetMethods = ["flr", "bus"]
            pf.bars = [FixtureBAR(0, .memory64, start: 0x38_0000_0000 + UInt64(p) << 28, size: 0x80_0000, prefetchable: true)]
            pf.capabilities = [.powerManagement, .msi(vectors: 1), .msix(tableSize: 129, tableBAR: 0, tableOffset: 0x40_0000),
                               .pcie(portType: 0), .aer, .ari,
                               .sriov(initialVFs: 255, totalVFs: 255, numVFs: vfsPerPF, offset: 1, stride: 1, vfDeviceID: 0x154c),
                               .acs(capability: 0, control: 0)]
            pf.sriov = FixtureSRIOV(totalVFs: 255, numVFs: vfsPerPF, driversAutoprobe: false, vfDeviceID: 0x154c,
                                    vfBars: [FixtureBAR(0, .memory64, start: 0x39_0000_0000 + UInt64(p) << 28, size: 0x1_0000, prefetchable: true)])
            try fixture.add(pf)
            for v in 0..<vfsPerPF {
                let rid = Int(bus) << 8 + 1 + v
                let vfAddress = try PCIAddress(bus: UInt8(rid >> 8), device: UInt8((rid >> 3) & 0x1f), function: UInt8(rid & 7))
                var vf = FixtureDevice(vfAddress, vendor: 0x8086, device: 0x154c, class: 0x020000)
                vf.hostBridgeBus = bus
                vf.driver = v % 3 == 0 ? nil : (v % 3 == 1 ? "vfio-pci" : "iavf")
                vf.iommuGroup = group; group += 1
                vf.numaNode = p % 2
                vf.physfn = pfAddress
                vf.vfIndex = v
                vf.bars = [FixtureBAR(0, .memory64, start: 0x39_0000_0000 + UInt64(p) << 28 + UInt64(v) << 16, size: 0x1_0000, prefetchable: true)]
                vf.capabilities = [.msix(tableSize: 5, tableOffset: 0x8000, pbaOffset: 0x9000), .pcie(portType: 0), .ari]
                try fixture.add(vf)
            }
        }
    }

    /// Teaches `kernel` how the small fixture's PF 0000:01:00.0 makes VFs when sriov_numvfs is
    /// written (ARI offset 16, stride 1, one IOMMU group each from 30, iavf as their natural driver).
    public static func teachSmallVFs(_ kernel: SimulatedKernel) {
        let pf = try! PCIAddress(parsing: "01:00.0")
        @Sendable func vfAddress(_ i: Int) -> PCIAddress {
            let rid = 0x0100 + 16 + i
            return try! PCIAddress(bus: UInt8(rid >> 8), device: UInt8((rid >> 3) & 0x1f), function: UInt8(rid & 7))
        }
        kernel.vfTemplates[pf] = { i in
            var vf = FixtureDevice(vfAddress(i), vendor: 0x8086, device: 0x154c, class: 0x020000)
            vf.parent = try! PCIAddress(parsing: "00:1c.0")
            vf.iommuGroup = 30 + i
            vf.physfn = pf
            return vf
        }
        for i in 0..<64 { kernel.naturalDrivers[vfAddress(i)] = "iavf" }
    }
}
