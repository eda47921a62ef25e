import Foundation
import HostPCI
import SRIOV
import SysfsFixtures
import Testing

/// From a PF's PCI address to its network interface and back, on a fixture sysfs tree.
@Suite final class VFLinkInterfaceTests {
    let fixture: SysfsFixture
    let client: VFLinkClient
    let pf = try! PCIAddress(parsing: "0000:01:00.0")

    init() throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        client = VFLinkClient(root: fixture.root)
        // The i40e PF has two ports' interfaces (dev_port 0 and 1), listed in reverse order of preference.
        let fm = FileManager.default
        let dev = fixture.root.devicePath(pf)
        for (name, port) in [("ens1f0", 0), ("a-ens1f0p1", 1)] {
            try fm.createDirectory(atPath: "\(dev)/net/\(name)", withIntermediateDirectories: true)
            try "\(port)\n".write(toFile: "\(dev)/net/\(name)/dev_port", atomically: false, encoding: .utf8)
        }
        try fm.createDirectory(atPath: fixture.root.path + "/class/net/ens1f0", withIntermediateDirectories: true)
        try fm.createSymbolicLink(atPath: fixture.root.path + "/class/net/ens1f0/device",
                                  withDestinationPath: "../../../bus/pci/devices/0000:01:00.0")
    }

    deinit { fixture.remove() }

    func error(_ address: String) -> SRIOVError? {
        do { _ = try client.interface(for: try PCIAddress(parsing: address)); return nil } catch let e as SRIOVError { return e } catch { return nil }
    }

    @Test func pfToInterface() throws {
        #expect(try client.interface(for: pf) == "ens1f0", "lowest dev_port wins over name order")
        #expect(client.pciAddress(ofInterface: "ens1f0") == pf)
        #expect(client.driver(ofInterface: "ens1f0") == "i40e")
        #expect(client.pciAddress(ofInterface: "lo") == nil)
        #expect(client.pciAddress(ofInterface: "../ens1f0") == nil)
    }

    @Test func functionsWithoutAnInterface() throws {
        let vf = try #require(error("0000:01:02.1"))
        #expect(vf.code == .invalidArgument && vf.message.contains("is a VF of 0000:01:00.0"), "\(vf)")
        let nvme = try #require(error("0000:00:04.0"))
        #expect(nvme.code == .noNetDevice && nvme.message.contains("its driver vfio-pci made no network interface"), "\(nvme)")
        let unbound = try #require(error("0000:00:03.0"))
        #expect(unbound.code == .noNetDevice && unbound.message.contains("no driver is bound"), "\(unbound)")
        let missing = try #require(error("0000:7f:00.0"))
        #expect(missing.code == .noNetDevice && missing.message.contains("no PCI device 0000:7f:00.0"), "\(missing)")
    }
}
