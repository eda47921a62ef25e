import Foundation
import Testing
@testable import HostPCI
import SysfsFixtures

/// The inventory on a fixture tree that covers an SR-IOV PF with VFs, a multi-function group behind
/// a conventional bridge, a device with no driver and one with `driver_override` set.
@Suite final class FixtureInventoryTests {
    let fixture: SysfsFixture
    let devices: [PCIDevice]

    init() throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        devices = try PCIInventory(root: fixture.root).devices()
    }

    deinit { fixture.remove() }

    func device(_ s: String) throws -> PCIDevice {
        let a = try PCIAddress(parsing: s)
        return try #require(devices.first { $0.address == a })
    }

    /// `device(_:)` finds a VF's index by routing-ID arithmetic plus one link; it must agree with
    /// the full scan, and fall back to reading every link when the arithmetic does not hold.
    @Test func singleDeviceVFIndexAgreesWithTheScan() throws {
        let inventory = PCIInventory(root: fixture.root, lookUpNames: false)
        let vfs = devices.filter(\.isVirtualFunction)
        #expect(!vfs.isEmpty)
        for vf in vfs { #expect(try inventory.device(vf.address).vfIndex == vf.vfIndex, "\(vf.address)") }
        // A lying sriov_offset: the arithmetic misses, the links still answer.
        let pf = try #require(vfs.first?.physfn)
        try "3\n".write(toFile: fixture.root.devicePath(pf) + "/sriov_offset", atomically: false, encoding: .utf8)
        for vf in vfs where vf.physfn == pf { #expect(try inventory.device(vf.address).vfIndex == vf.vfIndex, "\(vf.address) after the offset changed") }
    }

    @Test func findsEveryFunctionSorted() throws {
        #expect(devices.map(\.address.description) == [
            "0000:00:00.0", "0000:00:03.0", "0000:00:04.0", "0000:00:1c.0", "0000:00:1e.0",
            "0000:01:00.0", "0000:01:02.0", "0000:01:02.1", "0000:05:00.0", "0000:05:00.1",
        ])
    }

    @Test func readsIdentityAndNames() throws {
        let pf = try device("01:00.0")
        #expect(pf.vendorID == 0x8086 && pf.deviceID == 0x1572)
        #expect(pf.subsystemVendorID == 0x8086 && pf.subsystemDeviceID == 0x0001)
        #expect(pf.classCode == 0x020000 && pf.revision == 2)
        #expect(pf.names.vendor == "Intel Corporation")
        #expect(pf.names.device == "Ethernet Controller X710 for 10GbE SFP+")
        #expect(pf.names.deviceClass == "Ethernet controller")
        #expect(pf.driver == "i40e" && pf.driverOverride == nil)
        #expect(pf.iommuGroup == 10 && pf.numaNode == 0)
        #expect(pf.resetMethods == ["flr", "bus"])
        #expect(pf.upstream.map(\.description) == ["0000:00:1c.0"])
        #expect(!pf.isBridge)
    }

    @Test func readsBARsFromResource() throws {
        let pf = try device("01:00.0")
        #expect(pf.bars == [BAR(index: 0, start: 0xfb00_0000, size: 0x80_0000, kind: .memory64, prefetchable: true),
                            BAR(index: 3, start: 0xfb80_0000, size: 0x8000, kind: .memory64, prefetchable: true)])
        let nic = try device("05:00.0")
        #expect(nic.bars == [BAR(index: 0, start: 0xfe00_0000, size: 0x2_0000, kind: .memory32, prefetchable: false),
                             BAR(index: 1, start: 0xc000, size: 0x40, kind: .io, prefetchable: false)])
        #expect(pf.sriov?.vfBars == [BAR(index: 0, start: 0xfa00_0000, size: 0x1_0000 * 64, kind: .memory64, prefetchable: true)])
    }

    @Test func readsCapabilitiesThroughLibpci() throws {
        let caps = try #require(try device("01:00.0").capabilities)
        #expect(caps.all == ["pm", "msi", "msix", "pcie", "ext:aer", "ext:ari", "ext:sriov"])
        #expect(caps.msix == .init(tableSize: 129, tableBAR: 3, tableOffset: 0, pbaBAR: 3, pbaOffset: 0x1000, enabled: false))
        #expect(caps.msi == .init(vectors: 1, is64Bit: true, perVectorMasking: true, enabled: false))
        #expect(caps.pciExpress == .init(portType: .endpoint, flr: true))
        #expect(caps.sriov == .init(initialVFs: 64, totalVFs: 64, numVFs: 2, firstVFOffset: 16, vfStride: 1, vfDeviceID: 0x154c))
        #expect(caps.ari)
        let rp = try #require(try device("00:1c.0").capabilities)
        #expect(rp.pciExpress?.portType == .rootPort)
        #expect(rp.acs?.enabledNames == ["sv", "rr", "cr", "uf"])
        // A conventional function: 256-byte configuration space, no extended list.
        let nic = try #require(try device("05:00.0").capabilities)
        #expect(nic.all == ["pm", "msi"])
        #expect(nic.msi == .init(vectors: 1, is64Bit: true, perVectorMasking: false, enabled: false))
        #expect(try device("05:00.1").capabilities?.all == [])
    }

    @Test func readsSRIOVTopology() throws {
        let pf = try device("01:00.0")
        let s = try #require(pf.sriov)
        #expect(s.totalVFs == 64 && s.numVFs == 2 && s.driversAutoprobe == true)
        #expect(s.vfOffset == 16 && s.vfStride == 1 && s.vfDeviceID == 0x154c)
        #expect(s.vfs.map(\.index) == [0, 1])
        #expect(s.vfs.map(\.address.description) == ["0000:01:02.0", "0000:01:02.1"])
        let vf1 = try device("01:02.1")
        #expect(vf1.physfn == pf.address && vf1.vfIndex == 1 && vf1.sriov == nil)
        #expect(vf1.driver == "iavf" && vf1.iommuGroup == 21)
        #expect(try device("00:03.0").physfn == nil)
        // A single-device read finds the VF index too.
        let single = try PCIInventory(root: fixture.root).device(vf1.address)
        #expect(single == vf1)
    }

    @Test func driverAndOverride() throws {
        #expect(try device("00:03.0").driver == nil)
        let nvme = try device("00:04.0")
        #expect(nvme.driver == "vfio-pci" && nvme.driverOverride == "vfio-pci")
        #expect(nvme.numaNode == 1)
        #expect(try device("00:00.0").numaNode == nil)  // -1 in sysfs
    }

    @Test func bridgesAndUpstreamPath() throws {
        #expect(try device("00:1c.0").isBridge)
        #expect(try device("00:1e.0").isBridge)
        #expect(try device("05:00.1").upstream.map(\.description) == ["0000:00:1e.0"])
        #expect(try device("00:04.0").upstream.isEmpty)
    }

    @Test func groupsAndViability() throws {
        let groups = PCIInventory(root: fixture.root).groups(devices: devices)
        #expect(groups.map(\.number) == [0, 1, 3, 4, 5, 10, 20, 21])
        let shared = try #require(groups.first { $0.number == 5 })
        #expect(shared.devices.map(\.address.description) == ["0000:00:1e.0", "0000:05:00.0", "0000:05:00.1"])
        // e1000 on 05:00.0 does its own DMA: the group cannot go to VFIO until it is unbound.
        #expect(shared.blockers == [IOMMUGroup.Blocker(address: try PCIAddress(parsing: "05:00.0"), driver: "e1000")])
        #expect(!shared.isViable)
        #expect(try #require(groups.first { $0.number == 20 }).isViable)   // VF on vfio-pci
        #expect(try #require(groups.first { $0.number == 3 }).isViable)    // unbound
        #expect(try #require(groups.first { $0.number == 1 }).isViable)    // root port on pcieport
        #expect(try !#require(groups.first { $0.number == 21 }).isViable)  // VF on iavf
        #expect(PCIInventory(root: fixture.root).groupMembers(5)?.count == 3)
        #expect(PCIInventory(root: fixture.root).groupMembers(99) == nil)
    }

    @Test func viabilityRules() {
        #expect(IOMMUGroup.allowsUserDMA(driver: "vfio-pci", isBridge: false))
        #expect(IOMMUGroup.allowsUserDMA(driver: "mlx5_vfio_pci", isBridge: false))
        #expect(IOMMUGroup.allowsUserDMA(driver: "pci-stub", isBridge: false))
        #expect(IOMMUGroup.allowsUserDMA(driver: "pcieport", isBridge: true))
        #expect(!IOMMUGroup.allowsUserDMA(driver: "pcieport", isBridge: false))
        #expect(!IOMMUGroup.allowsUserDMA(driver: "nvme", isBridge: false))
    }

    @Test func unknownDeviceAndMissingRoot() throws {
        let missing = try PCIAddress(parsing: "0000:7f:00.0")
        #expect {
            _ = try PCIInventory(root: fixture.root).device(missing)
        } throws: { e in
            (e as? HostPCIError)?.code == .deviceNotFound && "\(e)".contains("0000:7f:00.0")
        }
        #expect {
            _ = try PCIInventory(root: SysfsRoot(path: fixture.root.path + "/nonexistent")).devices()
        } throws: { e in
            (e as? HostPCIError)?.code == .sysfsUnavailable && "\(e)".contains("nonexistent/bus/pci/devices")
        }
    }

    @Test func fixtureRefusesTheRealSysfs() {
        #expect(throws: FixtureError.self) { _ = try SysfsFixture(directory: "/sys") }
        #expect(throws: FixtureError.self) { _ = try SysfsFixture(directory: "/sys/") }
        #expect(SysfsRoot.system.isSystem)
        #expect(!fixture.root.isSystem)
    }
}
