import Foundation
import Testing
@testable import HostPCI
import SRIOV
import SysfsFixtures

/// Decision logic of binding and VF lifecycle on a fixture tree with a simulated kernel:
/// viability, idempotency, rollback after injected failures, refusals. The lab runs the same
/// code against the real kernel.
@Suite final class DeviceOperationTests {
    let fixture: SysfsFixture
    let kernel: SimulatedKernel
    var root: SysfsRoot { fixture.root }

    static func a(_ s: String) -> PCIAddress { try! PCIAddress(parsing: s) }

    init() throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        try fixture.addDriver("vfio-pci")
        try fixture.addDriver("pci-stub")
        kernel = SimulatedKernel(fixture: fixture)
        kernel.naturalDrivers = [Self.a("05:00.0"): "e1000", Self.a("05:00.1"): "e1000", Self.a("00:03.0"): "virtio-pci",
                                 Self.a("01:02.0"): "iavf", Self.a("01:02.1"): "iavf"]
        try fixture.addDriver("virtio-pci")
    }

    deinit { fixture.remove() }

    /// A snapshot of what binding changes: driver and override of every function.
    func state() throws -> [String: String] {
        var s: [String: String] = [:]
        for d in try PCIInventory(root: root, lookUpNames: false).devices() {
            s[d.address.description] = "\(d.driver ?? "-")/\(d.driverOverride ?? "-")"
        }
        return s
    }

    func passthrough(_ usage: HostUsage? = nil) -> PassthroughBinder {
        PassthroughBinder(binder: DriverBinder(root: root, writer: kernel), usage: usage ?? HostUsage(root: root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }))
    }

    @Test func bindsThroughDriverOverrideAndRestores() throws {
        let binder = DriverBinder(root: root, writer: kernel)
        let change = try binder.bind(Self.a("00:03.0"), to: "vfio-pci")
        #expect(change.previousDriver == nil && change.changed)
        #expect(kernel.writes.map(\.path) == ["bus/pci/devices/0000:00:03.0/driver_override", "bus/pci/drivers_probe"])
        #expect(binder.currentDriver(Self.a("00:03.0")) == "vfio-pci")
        #expect(binder.currentOverride(Self.a("00:03.0")) == "vfio-pci")
        // Idempotent: already there, nothing written.
        let again = try binder.bind(Self.a("00:03.0"), to: "vfio-pci")
        #expect(!again.changed && kernel.writes.count == 2)
        // Restore to no driver: unbind and clear the override, read back as unset.
        _ = try binder.restore(Self.a("00:03.0"), to: nil)
        #expect(binder.currentDriver(Self.a("00:03.0")) == nil && binder.currentOverride(Self.a("00:03.0")) == nil)
        // Restore to the driver it had.
        _ = try binder.bind(Self.a("01:02.1"), to: "vfio-pci")
        #expect(kernel.writes.suffix(3).map(\.path) == ["bus/pci/devices/0000:01:02.1/driver_override",
                                                        "bus/pci/drivers/iavf/unbind", "bus/pci/drivers_probe"])
        _ = try binder.restore(Self.a("01:02.1"), to: "iavf")
        #expect(binder.currentDriver(Self.a("01:02.1")) == "iavf" && binder.currentOverride(Self.a("01:02.1")) == nil)
    }

    @Test func dryRunWritesNothing() throws {
        let before = try state()
        let changes = try passthrough().bind(Self.a("05:00.0"), wholeGroup: true, dryRun: true)
        #expect(changes.map(\.address.description) == ["0000:05:00.0", "0000:05:00.1"])
        #expect(changes[0].actions.map(\.description) == [
            "write \"vfio-pci\" > \(root.path)/bus/pci/devices/0000:05:00.0/driver_override",
            "write \"0000:05:00.0\" > \(root.path)/bus/pci/drivers/e1000/unbind",
            "write \"0000:05:00.0\" > \(root.path)/bus/pci/drivers_probe",
            "wait for 0000:05:00.0 to bind to vfio-pci",
        ])
        #expect(kernel.writes.isEmpty)
        #expect(try state() == before)
    }

    @Test func refusesANonViableGroupAndBindsItWhole() throws {
        let before = try state()
        #expect {
            _ = try self.passthrough().bind(Self.a("05:00.1"))
        } throws: { e in
            let e = e as! HostPCIError
            return e.code == .groupNotViable && e.message.contains("0000:05:00.0 (on e1000)") && e.message.contains("--group")
        }
        #expect(try state() == before && kernel.writes.isEmpty)
        let changes = try passthrough().bind(Self.a("05:00.1"), wholeGroup: true)
        // The bridge stays; both functions move.
        #expect(changes.map(\.address.description) == ["0000:05:00.1", "0000:05:00.0"])
        let after = try state()
        #expect(after["0000:05:00.0"] == "vfio-pci/vfio-pci" && after["0000:05:00.1"] == "vfio-pci/vfio-pci")
        #expect(after["0000:00:1e.0"] == before["0000:00:1e.0"])
        #expect(PCIInventory(root: root).groups(devices: try PCIInventory(root: root).devices()).first { $0.number == 5 }?.isViable == true)
        // Restoring puts each back on the driver it had.
        for c in changes { _ = try DriverBinder(root: root, writer: kernel).restore(c.address, to: c.previousDriver) }
        #expect(try state() == before)
    }

    @Test func aFailureMidwayLeavesEveryDeviceAsItWas() throws {
        let before = try state()
        // The second function's probe fails: the first must be put back.
        kernel.probeFailures["vfio-pci"] = [Self.a("05:00.0")]
        #expect {
            _ = try self.passthrough().bind(Self.a("05:00.1"), wholeGroup: true)
        } throws: { e in
            let m = (e as! HostPCIError).message
            return m.contains("binding 0000:05:00.0 to vfio-pci failed") && m.contains("0000:05:00.1 was put back too")
        }
        #expect(try state() == before)
    }

    @Test(arguments: ["driver_override", "unbind", "drivers_probe"])
    func injectedWriteFailuresRollBack(step: String) throws {
        let before = try state()
        kernel.failNextWrite(pathSuffix: step, errno: EIO)
        #expect(throws: HostPCIError.self) { _ = try self.passthrough().bind(Self.a("01:02.1")) }
        #expect(try state() == before)
    }

    @Test func unknownDriverAndBadNamesChangeNothing() throws {
        let before = try state()
        #expect {
            _ = try self.passthrough().bind(Self.a("01:02.1"), driver: "no-such-driver")
        } throws: { e in
            (e as! HostPCIError).code == .driverNotFound && "\(e)".contains("modprobe no-such-driver")
        }
        for bad in ["../evil", "vfio pci", "", "a/b"] {
            #expect(throws: HostPCIError.self) { _ = try self.passthrough().bind(Self.a("01:02.1"), driver: bad) }
        }
        #expect(try state() == before && kernel.writes.isEmpty)
    }

    @Test func refusesBridgesAndDevicesWithoutAGroup() throws {
        #expect(throws: HostPCIError.self) { _ = try self.passthrough().bind(Self.a("00:1e.0")) }
        var noGroup = FixtureDevice(Self.a("00:07.0"), vendor: 0x1af4, device: 0x1042, class: 0x010000)
        noGroup.driver = "virtio-pci"
        try fixture.add(noGroup)
        #expect {
            _ = try self.passthrough().bind(Self.a("00:07.0"))
        } throws: { e in (e as! HostPCIError).code == .groupNotViable && "\(e)".contains("intel_iommu=on") }
    }

    @Test func refusesDevicesTheHostUses() throws {
        // An NVMe namespace of 00:04.0 mounted on /, and an interface with an address on the PF.
        let dir = try #require(fixture.devicePath(Self.a("00:04.0")))
        try FileManager.default.createDirectory(atPath: dir + "/nvme/nvme0/nvme0n1", withIntermediateDirectories: true)
        try "259:0\n".write(toFile: dir + "/nvme/nvme0/nvme0n1/dev", atomically: true, encoding: .utf8)
        try "1000\n".write(toFile: dir + "/nvme/nvme0/nvme0n1/size", atomically: true, encoding: .utf8)
        let mountinfo = fixture.root.path + ".mountinfo"
        try "22 1 259:0 / / rw,relatime shared:1 - ext4 /dev/nvme0n1 rw\n".write(toFile: mountinfo, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: mountinfo) }
        try fixture.setDriver(Self.a("00:04.0"), "nvme")
        try fixture.addDriver("nvme")
        let pfDir = try #require(fixture.devicePath(Self.a("01:00.0")))
        try FileManager.default.createDirectory(atPath: pfDir + "/net/ens1f0", withIntermediateDirectories: true)
        try "up\n".write(toFile: pfDir + "/net/ens1f0/operstate", atomically: true, encoding: .utf8)
        let usage = HostUsage(root: root, mountInfoPath: mountinfo, swapsPath: "/nonexistent",
                              addresses: { $0 == "ens1f0" ? ["192.0.2.7"] : [] })
        let before = try state()
        #expect {
            _ = try self.passthrough(usage).bind(Self.a("00:04.0"), driver: "vfio-pci")
        } throws: { e in
            (e as! HostPCIError).code == .deviceInUse && "\(e)".contains("nvme0n1 (259:0) is mounted on /") && "\(e)".contains("--force")
        }
        #expect {
            _ = try self.passthrough(usage).bind(Self.a("01:00.0"), driver: "vfio-pci")
        } throws: { e in "\(e)".contains("interface ens1f0 is up with address 192.0.2.7") }
        #expect(try state() == before && kernel.writes.isEmpty)
        // Forced, it goes.
        _ = try passthrough(usage).bind(Self.a("00:04.0"), driver: "vfio-pci", force: true)
        #expect(try state()["0000:00:04.0"] == "vfio-pci/vfio-pci")
    }

    @Test func realHostUsageSeesTheRootFileSystem() throws {
        // Read-only, on this machine: the PCI device behind / must be reported as in use.
        guard let rootDev = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            .split(separator: "\n").compactMap(HostUsage.parseMountInfo).first(where: { $0.mountPoint == "/" }) else { return }
        let devices = try PCIInventory(root: .system, lookUpNames: false).devices()
        let usage = HostUsage(root: .system)
        let users = devices.filter { d in usage.uses(of: d.address).contains { $0.contains("is mounted on /") } }
        // The root may live on a device outside PCI (a RAM disk, a network file system): only check when a block device of ours carries it.
        if rootDev.source.hasPrefix("/dev/vd") || rootDev.source.hasPrefix("/dev/nvme") || rootDev.source.hasPrefix("/dev/sd") {
            #expect(!users.isEmpty, "no PCI device reported as carrying \(rootDev.source) mounted on /")
        }
        // Every interface that is up with an address and sits on a PCI device is reported.
        for d in devices {
            for (ifname, path) in usage.interfaces(under: SysfsRoot.system.devicePath(d.address), depth: 0) {
                let up = (try? String(contentsOfFile: path + "/operstate", encoding: .utf8))?.hasPrefix("up") ?? false
                if up && !HostUsage.interfaceAddresses(ifname).isEmpty {
                    #expect(usage.uses(of: d.address).contains { $0.contains("interface \(ifname) is up") }, "\(d.address) \(ifname)")
                }
            }
        }
    }
}

/// VF lifecycle on a fixture PF with the simulated kernel.
@Suite final class VFLifecycleTests {
    let fixture: SysfsFixture
    let kernel: SimulatedKernel
    let pf = try! PCIAddress(parsing: "01:00.0")

    init() throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        kernel = SimulatedKernel(fixture: fixture)
        try fixture.addDriver("iavf")
        try fixture.addDriver("vfio-pci")
        // Start with no VFs: remove the two the standard fixture has.
        try kernel.write("0", to: fixture.root.devicePath(pf) + "/sriov_numvfs")
        StandardFixtures.teachSmallVFs(kernel)
        kernel.writesReset()
    }

    deinit { fixture.remove() }

    var manager: VFManager { VFManager(root: fixture.root, writer: kernel) }

    @Test func createsAndRemovesVFs() throws {
        let plan = try manager.setCount(pf: pf, count: 4, autoprobe: false)
        #expect(plan.map(\.description).contains("write \"0\" > \(fixture.root.path)/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe"))
        let s = try manager.physicalFunction(pf).sriov
        #expect(s.numVFs == 4 && s.vfs.map(\.address.description) == ["0000:01:02.0", "0000:01:02.1", "0000:01:02.2", "0000:01:02.3"])
        #expect(s.driversAutoprobe == false)
        // Autoprobe off: no host driver took them.
        #expect(try PCIInventory(root: fixture.root).devices().filter(\.isVirtualFunction).allSatisfy { $0.driver == nil })
        // Predicted addresses match what appeared.
        #expect((0..<4).map { manager.predictedAddress(pf: pf, sriov: s, index: $0) } == s.vfs.map(\.address))
        // Same count again: nothing to do.
        #expect(try manager.setCount(pf: pf, count: 4).isEmpty)
        try manager.setCount(pf: pf, count: 0)
        #expect(try manager.physicalFunction(pf).sriov.vfs.isEmpty)
    }

    /// With autoprobe off a VF probes only through its driver_override (the kernel's
    /// pci_device_can_probe): the host driver is bound by override; vfio-pci takes it; restoring
    /// must bind through the override again (clearing it first would fail with ENODEV, as it did
    /// in the lab) and then leave the override as it was.
    @Test func restoresAVFWhosePFHasAutoprobeOff() throws {
        try manager.setCount(pf: pf, count: 1, autoprobe: false)
        let vf = try manager.physicalFunction(pf).sriov.vfs[0].address
        let binder = DriverBinder(root: fixture.root, writer: kernel)
        #expect(throws: HostPCIError.self) { try kernel.write(vf.description, to: fixture.root.path + "/bus/pci/drivers/iavf/bind") }
        _ = try binder.bind(vf, to: "iavf")
        #expect(binder.currentDriver(vf) == "iavf" && binder.currentOverride(vf) == "iavf")
        _ = try binder.bind(vf, to: "vfio-pci")
        #expect(binder.currentDriver(vf) == "vfio-pci")
        let change = try binder.restore(vf, to: "iavf", override: "iavf")
        #expect(change.changed && binder.currentDriver(vf) == "iavf" && binder.currentOverride(vf) == "iavf")
        _ = try binder.bind(vf, to: "vfio-pci")
        _ = try binder.restore(vf, to: "iavf")                       // the override goes, the driver stays
        #expect(binder.currentDriver(vf) == "iavf" && binder.currentOverride(vf) == nil)
        #expect(!(try binder.restore(vf, to: "iavf")).changed)
    }

    @Test func changingTheCountGoesThroughZero() throws {
        try manager.setCount(pf: pf, count: 2)
        kernel.writesReset()
        try manager.setCount(pf: pf, count: 3)
        #expect(kernel.writes.map(\.value) == ["0", "3"])
        #expect(try manager.physicalFunction(pf).sriov.numVFs == 3)
    }

    @Test func errorsNameTheFix() throws {
        #expect { try self.manager.setCount(pf: self.pf, count: 65) } throws: { e in
            (e as! SRIOVError).code == .tooManyVFs && "\(e)".contains("at most 64")
        }
        #expect { try self.manager.setCount(pf: try PCIAddress(parsing: "00:03.0"), count: 1) } throws: { e in
            (e as! SRIOVError).code == .notSRIOV
        }
        kernel.failNextWrite(pathSuffix: "sriov_numvfs", value: "4", errno: ENOMEM)
        #expect { try self.manager.setCount(pf: self.pf, count: 4, autoprobe: false) } throws: { e in
            (e as! SRIOVError).code == .noResources && "\(e)".contains("pci=realloc")
        }
        // Rolled back: no VFs, autoprobe as it was.
        let s = try manager.physicalFunction(pf).sriov
        #expect(s.numVFs == 0 && s.driversAutoprobe == true)
        kernel.failNextWrite(pathSuffix: "sriov_numvfs", value: "2", errno: EBUSY)
        #expect { try self.manager.setCount(pf: self.pf, count: 2) } throws: { e in (e as! SRIOVError).code == .vfsInUse }
    }

    @Test func aHungDriverTimesOut() throws {
        var m = manager
        m.writeTimeout = 0.3
        kernel.hangNextWrite(pathSuffix: "sriov_numvfs", seconds: 1.0)
        let start = Date()
        #expect { try m.setCount(pf: self.pf, count: 1) } throws: { e in (e as! SRIOVError).code == .timeout && "\(e)".contains("dmesg") }
        #expect(Date().timeIntervalSince(start) < 0.9)
        Thread.sleep(forTimeInterval: 0.8)  // let the hung write finish before the fixture goes away
    }
}
