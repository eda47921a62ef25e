import Foundation
import HostPCI
@testable import PassageDaemon
import SRIOV
import Testing

/// An SR-IOV NVMe primary controller in memory, behaving the way QEMU's (hw/nvme) does for the
/// commands Passage sends: Identify CNS 0x01/0x14/0x15 and Virtualization Management with its
/// status codes. Records every command.
final class SimulatedNVMePrimary: NVMeAdminTransport, @unchecked Sendable {
    var controllerID: UInt16 = 0
    var caps = nvmeQEMUCapabilities()
    /// The primary flexible allocation that takes effect at the next reset.
    var nextPrimary: (vq: UInt16, vi: UInt16) = (0, 0)
    var secondaries: [NVMeSecondaryController]
    /// VFs that exist (secondary online needs its VF).
    var enabledVFs = 0
    var sent: [NVMeAdminCommand] = []
    /// Returns a status to complete a command with instead of running it.
    var inject: ((NVMeAdminCommand) -> Int32?)?

    init(secondaries: Int = 4) {
        self.secondaries = (0..<secondaries).map {
            NVMeSecondaryController(controllerID: UInt16($0 + 1), primaryControllerID: 0, isOnline: false,
                                    vfNumber: UInt16($0 + 1), queues: 0, interrupts: 0)
        }
    }

    var virtualizationCommands: [NVMeAdminCommand] { sent.filter { $0.opcode == 0x1C } }

    /// The primary holds `vq`/`vi` flexible resources now (as after an allocation and a reset).
    func primaryHolds(vq: UInt16, vi: UInt16) {
        caps.vqFlexibleAllocatedToPrimary = vq
        caps.viFlexibleAllocatedToPrimary = vi
        nextPrimary = (vq, vi)
    }

    /// A function-level reset of the PF (what writing its sysfs `reset` does): the pending primary
    /// allocation takes effect, every secondary goes offline and gives its resources back. In QEMU
    /// (`nvme_ctrl_reset`) only a function reset activates the allocation (`nvme_activate_virt_res`);
    /// a controller reset (CC.EN 1 → 0) offlines the secondaries but leaves it pending.
    func reset() {
        caps.vqFlexibleAllocatedToPrimary = nextPrimary.vq
        caps.viFlexibleAllocatedToPrimary = nextPrimary.vi
        for i in secondaries.indices { setResources(i, .queue, 0); setResources(i, .interrupt, 0); secondaries[i].isOnline = false }
    }

    /// `sriov_numvfs` went to `n`: the secondaries of the VFs that went away go offline, and offline
    /// means without resources (QEMU's `nvme_sriov_post_write_config` → `nvme_virt_set_state`, as
    /// for the Secondary Offline action).
    func vfsEnabled(_ n: Int) {
        for i in secondaries.indices where Int(secondaries[i].vfNumber) > n {
            setResources(i, .queue, 0)
            setResources(i, .interrupt, 0)
            secondaries[i].isOnline = false
        }
        enabledVFs = n
    }

    private func setResources(_ i: Int, _ r: NVMeAdminCommand.Resource, _ n: Int) {
        if r == .queue {
            caps.vqFlexibleAssigned = UInt32(Int(caps.vqFlexibleAssigned) - Int(secondaries[i].queues) + n)
            secondaries[i].queues = UInt16(n)
        } else {
            caps.viFlexibleAssigned = UInt32(Int(caps.viFlexibleAssigned) - Int(secondaries[i].interrupts) + n)
            secondaries[i].interrupts = UInt16(n)
        }
    }

    func submit(_ command: NVMeAdminCommand, data: inout [UInt8], result: inout UInt32) -> Int32 {
        sent.append(command)
        if let status = inject?(command) { return status }
        switch command.opcode {
        case 0x06:
            guard data.count == 4096 else { return -EINVAL }
            switch command.cdw10 & 0xff {
            case 0x01: data = nvmeIdentifyControllerBytes(controllerID: controllerID)
            case 0x14: data = nvmePrimaryCapabilitiesBytes(caps)
            case 0x15: data = nvmeSecondaryListBytes(secondaries)
            default: return 0x4002
            }
            return 0
        case 0x1C:
            let action = command.cdw10 & 0xf
            let r: NVMeAdminCommand.Resource = (command.cdw10 >> 8) & 0x7 == 0 ? .queue : .interrupt
            let id = UInt16(command.cdw10 >> 16)
            let n = Int(command.cdw11 & 0xffff)
            switch action {
            case 0x1:
                guard id == controllerID else { return 0x411F }
                guard n <= caps.flexibleTotal(r) else { return 0x4121 }
                guard n <= caps.flexibleTotal(r) - caps.assignedToSecondaries(r) else { return 0x4122 }
                if r == .queue { nextPrimary.vq = UInt16(n) } else { nextPrimary.vi = UInt16(n) }
                result = UInt32(n)
                return 0
            case 0x8:
                guard let i = secondaries.firstIndex(where: { $0.controllerID == id }) else { return 0x411F }
                guard !secondaries[i].isOnline else { return 0x4120 }
                guard n <= caps.secondaryMaximum(r) else { return 0x4121 }
                let current = Int(r == .queue ? secondaries[i].queues : secondaries[i].interrupts)
                guard n - current <= caps.free(r) else { return 0x4122 }
                setResources(i, r, n)
                result = UInt32(n)
                return 0
            case 0x7, 0x9:
                guard let i = secondaries.firstIndex(where: { $0.controllerID == id }) else { return 0x411F }
                if action == 0x9 {
                    let s = secondaries[i]
                    guard s.interrupts > 0, s.queues >= 2, Int(s.vfNumber) <= enabledVFs else { return 0x4120 }
                    secondaries[i].isOnline = true
                } else {
                    setResources(i, .queue, 0)
                    setResources(i, .interrupt, 0)
                    secondaries[i].isOnline = false
                }
                return 0
            default:
                return 0x4002
            }
        default:
            return 0x4001
        }
    }
}

/// Records sysfs writes; a write of the PF's `reset` resets the simulated controller.
final class NVMeRecordingWriter: SysfsWriter, @unchecked Sendable {
    var writes: [HostAction] = []
    var onWrite: ((String, String) -> Void)?

    func write(_ value: String, to path: String) throws(HostPCIError) {
        writes.append(.write(path: path, value: value))
        onWrite?(path, value)
    }
}

/// `NVMeVFProvisioner` against a simulated controller and a small sysfs tree: idempotency,
/// the VF-number mapping, validation, refusals and how NVMe statuses surface.
@Suite final class NVMeVFProvisionerTests {
    let dir: String
    let root: SysfsRoot
    let pf = try! PCIAddress(parsing: "0000:01:00.0")
    let sim = SimulatedNVMePrimary()
    let writer = NVMeRecordingWriter()
    let fm = FileManager.default

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/passage-nvme.XXXXXX").utf8CString)
        guard let d = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { throw TestSetupError("mkdtemp failed") }
        dir = String(cString: d)
        root = SysfsRoot(path: dir)
        try fm.createDirectory(atPath: root.path + "/bus/pci/drivers/nvme", withIntermediateDirectories: true)
        let pfDir = root.devicePath(pf)
        try fm.createDirectory(atPath: pfDir + "/nvme/nvme0", withIntermediateDirectories: true)
        try "live\n".write(toFile: pfDir + "/nvme/nvme0/state", atomically: false, encoding: .utf8)
        try "0\n".write(toFile: pfDir + "/sriov_numvfs", atomically: false, encoding: .utf8)
        try "".write(toFile: pfDir + "/reset", atomically: false, encoding: .utf8)
        try bind(pf, to: "nvme")
        let resetPath = pfDir + "/reset"
        writer.onWrite = { [sim] path, value in if path == resetPath && value == "1" { sim.reset() } }
    }

    deinit { try? fm.removeItem(atPath: dir) }

    var provisioner: NVMeVFProvisioner {
        NVMeVFProvisioner(root: root, writer: writer, resetTimeout: 2) { [sim] (path: String) throws(SRIOVError) in
            NVMeController(path: path, transport: sim)
        }
    }

    func vf(_ i: Int) -> PCIAddress { try! PCIAddress(domain: 0, bus: 1, device: 0, function: UInt8(i + 1)) }

    func bind(_ a: PCIAddress, to driver: String) throws {
        try fm.createDirectory(atPath: root.path + "/bus/pci/drivers/" + driver, withIntermediateDirectories: true)
        let link = root.devicePath(a) + "/driver"
        try? fm.removeItem(atPath: link)
        try fm.createSymbolicLink(atPath: link, withDestinationPath: root.path + "/bus/pci/drivers/" + driver)
    }

    /// Creates VFs 0..<n in the tree (`virtfnN` links) and in the simulated controller.
    func createVFs(_ n: Int) throws {
        for i in 0..<n {
            try fm.createDirectory(atPath: root.devicePath(vf(i)), withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: root.devicePath(pf) + "/virtfn\(i)", withDestinationPath: "../" + vf(i).description)
        }
        try "\(n)\n".write(toFile: root.devicePath(pf) + "/sriov_numvfs", atomically: false, encoding: .utf8)
        sim.enabledVFs = n
    }

    func expectError(_ code: SRIOVError.Code, containing parts: [String], _ body: () throws -> Void,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("expected SRIOVError \(code)", sourceLocation: sourceLocation)
        } catch let e as SRIOVError {
            #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
            for p in parts { #expect(e.message.contains(p), "message lacks \(p.debugDescription): \(e.message)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("expected SRIOVError, got \(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: locating the controller

    @Test func findsTheControllerDeviceOfABoundPF() throws {
        #expect(try provisioner.controllerPath(pf: pf) == "/dev/nvme0")
        try fm.createDirectory(atPath: root.devicePath(pf) + "/nvme/nvme10", withIntermediateDirectories: true)
        #expect(try provisioner.controllerPath(pf: pf) == "/dev/nvme0")
    }

    @Test func saysHowToBindAPFThatIsNotOnNVMe() throws {
        try bind(pf, to: "vfio-pci")
        expectError(.invalidArgument, containing: ["0000:01:00.0 is bound to vfio-pci, not nvme", "drivers_probe", "driver/unbind"]) {
            _ = try provisioner.controllerPath(pf: pf)
        }
        try fm.removeItem(atPath: root.devicePath(pf) + "/driver")
        expectError(.invalidArgument, containing: ["has no driver, not nvme", "modprobe nvme"]) { _ = try provisioner.status(pf: pf) }
        expectError(.notFound, containing: ["no PCI device 0000:02:00.0"]) { _ = try provisioner.controllerPath(pf: try PCIAddress(parsing: "02:00.0")) }
        #expect(sim.sent.isEmpty)
    }

    @Test func saysWhenTheDriverMadeNoController() throws {
        try fm.removeItem(atPath: root.devicePath(pf) + "/nvme")
        expectError(.nvme, containing: ["bound to nvme but has no controller", "dmesg"]) { _ = try provisioner.controllerPath(pf: pf) }
    }

    // MARK: prepare

    @Test func prepareFreesThePrimarysResourcesAndResetsOnce() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        let resetPath = root.devicePath(pf) + "/reset"
        let actions = try provisioner.prepareForVFs(pf: pf)
        #expect(actions == [
            .ioctl(device: "/dev/nvme0", request: "NVME_IOCTL_ADMIN_CMD", detail: "Virtualization Management: primary flexible allocation VQ=0 on controller 0 (opcode 0x1c cdw10=0x00000001 cdw11=0x00000000)"),
            .ioctl(device: "/dev/nvme0", request: "NVME_IOCTL_ADMIN_CMD", detail: "Virtualization Management: primary flexible allocation VI=0 on controller 0 (opcode 0x1c cdw10=0x00000101 cdw11=0x00000000)"),
            .write(path: resetPath, value: "1"),
            .wait("controller nvme0 of 0000:01:00.0 to be live after the reset"),
        ])
        #expect(sim.virtualizationCommands.map(\.cdw10) == [0x0000_0001, 0x0000_0101])
        #expect(writer.writes == [.write(path: resetPath, value: "1")])
        #expect(sim.caps.vqFlexibleAllocatedToPrimary == 0 && sim.caps.viFlexibleAllocatedToPrimary == 0)

        sim.sent = []
        #expect(try provisioner.prepareForVFs(pf: pf).isEmpty)
        #expect(sim.virtualizationCommands.isEmpty)
        #expect(writer.writes.count == 1)
    }

    @Test func prepareOnlyAllocatesWhatThePrimaryHolds() throws {
        sim.primaryHolds(vq: 0, vi: 2)
        let actions = try provisioner.prepareForVFs(pf: pf)
        #expect(actions.count == 3)
        #expect(sim.virtualizationCommands.map(\.cdw10) == [0x0000_0101])
    }

    @Test func prepareDryRunReadsButChangesNothing() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        let actions = try provisioner.prepareForVFs(pf: pf, dryRun: true)
        #expect(actions.count == 4)
        #expect(sim.virtualizationCommands.isEmpty)
        #expect(sim.sent.allSatisfy { $0.opcode == 0x06 })
        #expect(writer.writes.isEmpty)
        #expect(sim.caps.vqFlexibleAllocatedToPrimary == 8)
    }

    @Test func prepareRefusesWhileVFsExist() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        try createVFs(2)
        expectError(.vfsInUse, containing: ["0000:01:00.0 has 2 VFs", "remove the VFs first"]) { _ = try provisioner.prepareForVFs(pf: pf) }
        #expect(sim.virtualizationCommands.isEmpty)
        #expect(writer.writes.isEmpty)
    }

    @Test func prepareNoticesAnAllocationTheResetDidNotApply() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        writer.onWrite = nil  // the "device" ignores the reset
        expectError(.nvme, containing: ["primary still holds 8 flexible VQ", "0000:01:00.0"]) { _ = try provisioner.prepareForVFs(pf: pf) }
    }

    // MARK: undoing the preparation

    @Test func undoGivesThePrimaryBackWhatPrepareFreed() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        var preparation: NVMeVFProvisioner.Preparation?
        _ = try provisioner.prepareForVFs(pf: pf) { preparation = $0 }
        let p = try #require(preparation)
        #expect(p.previous == [.queue: 8, .interrupt: 4] && p.controllerID == 0)
        sim.sent = []
        try provisioner.undoPreparation(p, secondaries: nil)
        #expect(sim.virtualizationCommands.map { [$0.cdw10, $0.cdw11] } == [[0x0000_0001, 8], [0x0000_0101, 4]])
        #expect(writer.writes.count == 2)
        #expect(sim.caps.vqFlexibleAllocatedToPrimary == 8 && sim.caps.viFlexibleAllocatedToPrimary == 4)
    }

    /// passaged's VF creation with NVMe provisioning writes, before each change, what undoing it
    /// needs into its intent (the secondaries as found, then what the primary held); killed after the
    /// provisioning began, start-up puts the controller back from that text alone.
    @Test func aCreationCutShortIsUndoneFromItsIntentAlone() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        final class Texts: @unchecked Sendable { var all: [String] = [] }
        let texts = Texts()
        let resources = NVMeVFResources(provisioner: provisioner, queues: 2, interrupts: 1) { [pf] secondaries, preparation in
            texts.all.append(VFIntent(pf: pf, count: 2, previousCount: 0, previousAutoprobe: nil,
                                      nvmeSecondaries: secondaries, nvmePreparation: preparation).text)
        }
        _ = try resources.prepare(pf: pf, dryRun: false)
        var recorded: [String] { texts.all }
        #expect(recorded == ["0000:01:00.0 2 previous=0 nvme-secondaries=1:0:0:0,2:0:0:0,3:0:0:0,4:0:0:0",
                             "0000:01:00.0 2 previous=0 nvme-secondaries=1:0:0:0,2:0:0:0,3:0:0:0,4:0:0:0 nvme-primary=0:8:4"])
        #expect(sim.caps.vqFlexibleAllocatedToPrimary == 0)
        try createVFs(2)
        _ = try resources.provision(pf: pf, vfIndex: 0, dryRun: false)
        #expect(sim.secondaries[0].isOnline && sim.secondaries[0].queues == 2)
        // Killed here. Start-up sets the VF count back to 0 (the secondaries go offline with it) …
        try "0\n".write(toFile: root.devicePath(pf) + "/sriov_numvfs", atomically: false, encoding: .utf8)
        sim.vfsEnabled(0)
        // … and gives the primary back what it held, from the intent's payload alone.
        let intent = try #require(VFIntent(parsing: recorded.last!))
        #expect(intent.text == recorded.last!)
        #expect(try intent.undoNVMe(provisioner) == "NVMe primary given back 8 VQ and 4 VI, secondaries as before")
        #expect(sim.caps.vqFlexibleAllocatedToPrimary == 8 && sim.caps.viFlexibleAllocatedToPrimary == 4)
        #expect(sim.secondaries.allSatisfy { !$0.isOnline && $0.queues == 0 && $0.interrupts == 0 })
        // Without a preparation (the primary was already free) only the secondaries are put back.
        #expect(try VFIntent(parsing: "0000:01:00.0 2 previous=0 nvme-secondaries=1:0:0:0")!.undoNVMe(provisioner) == "NVMe secondaries as before")
        #expect(try VFIntent(parsing: "0000:01:00.0 2 previous=0")!.undoNVMe(provisioner) == nil)
        // Payloads this version did not write are refused, not half-read.
        for bad in ["0000:01:00.0 2 previous=0 nvme-secondaries=1:2:0:0", "0000:01:00.0 2 previous=0 nvme-secondaries=1:0:0",
                    "0000:01:00.0 2 previous=0 nvme-primary=0:8", "0000:01:00.0 2 previous=0 nvme-primary=0:x:4",
                    "0000:01:00.0 2 previous=0 bogus=1", "0000:01:00.0 2 previous=0 autoprobe", "0000:01:00.0 2 previous=0 autoprobe=2"] {
            #expect(VFIntent(parsing: bad) == nil, "\(bad)")
        }
        #expect(VFIntent(parsing: "0000:01:00.0 2 previous=0 nvme-primary=0:-:4")?.nvmePreparation?.previous == [.interrupt: 4])
        // A controller with no secondaries: an empty list, read back as one.
        let none = VFIntent(pf: pf, count: 2, previousCount: 0, previousAutoprobe: false, nvmeSecondaries: [], nvmePreparation: nil)
        #expect(VFIntent(parsing: none.text) == none)
    }

    /// When what the freeing changes cannot be recorded first, nothing is changed.
    @Test func aPreparationThatCannotBeRecordedChangesNothing() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        struct Full: Error {}
        let resources = NVMeVFResources(provisioner: provisioner, queues: 2, interrupts: 1) { _, preparation in
            if preparation != nil { throw Full() }
        }
        expectError(.io, containing: ["0000:01:00.0", "nothing was changed"]) { _ = try resources.prepare(pf: pf, dryRun: false) }
        #expect(sim.virtualizationCommands.isEmpty && writer.writes.isEmpty)
        #expect(sim.caps.vqFlexibleAllocatedToPrimary == 8)
    }

    @Test func undoNeedsNoResetWhenTheFreeingNeverTookEffect() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        sim.inject = { $0.opcode == 0x1C && $0.cdw10 == 0x0000_0101 ? 0x4006 : nil }  // VI=0: internal error
        var preparation: NVMeVFProvisioner.Preparation?
        #expect(throws: SRIOVError.self) { _ = try provisioner.prepareForVFs(pf: pf) { preparation = $0 } }
        #expect(sim.nextPrimary == (0, 4))
        sim.inject = nil
        try provisioner.undoPreparation(try #require(preparation), secondaries: nil)
        // The pending allocation of 0 VQ is cancelled; the one in effect never changed, so no reset.
        #expect(sim.nextPrimary == (8, 4))
        #expect(writer.writes.isEmpty)
    }

    @Test func undoThatCannotResetSaysWhatIsLeftAndHowToFixIt() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        var preparation: NVMeVFProvisioner.Preparation?
        _ = try provisioner.prepareForVFs(pf: pf) { preparation = $0 }
        try createVFs(1)
        let p = try #require(preparation)
        let dir = root.devicePath(pf)
        expectError(.vfsInUse, containing: ["0000:01:00.0: giving the NVMe primary controller /dev/nvme0 back the 8 VQ and 4 VI", "has 1 VF",
                                            "It holds 0 VQ and 0 VI now", "`nvme virt-mgmt /dev/nvme0 --cntlid=0 --rt=0 --act=1 --nr=8`",
                                            "`nvme virt-mgmt /dev/nvme0 --cntlid=0 --rt=1 --act=1 --nr=4`", "`echo 1 > \(dir)/reset`"]) {
            try provisioner.undoPreparation(p, secondaries: nil)
        }
        #expect(writer.writes.count == 1)
    }

    // MARK: provision

    @Test func provisionAssignsThenOnlinesAndIsIdempotent() throws {
        try createVFs(4)
        let actions = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1)
        #expect(actions.map(\.description) == [
            "ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: secondary assign VQ=2 to controller 1 (opcode 0x1c cdw10=0x00010008 cdw11=0x00000002)",
            "ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: secondary assign VI=1 to controller 1 (opcode 0x1c cdw10=0x00010108 cdw11=0x00000001)",
            "ioctl NVME_IOCTL_ADMIN_CMD on /dev/nvme0: Virtualization Management: secondary online of controller 1 (opcode 0x1c cdw10=0x00010009 cdw11=0x00000000)",
        ])
        #expect(sim.secondaries[0] == NVMeSecondaryController(controllerID: 1, primaryControllerID: 0, isOnline: true, vfNumber: 1, queues: 2, interrupts: 1))

        sim.sent = []
        #expect(try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1).isEmpty)
        #expect(sim.virtualizationCommands.isEmpty)
        #expect(writer.writes.isEmpty)
    }

    @Test func provisionFindsTheSecondaryByVFNumberNotByID() throws {
        sim.secondaries = [
            NVMeSecondaryController(controllerID: 0x21, primaryControllerID: 0, isOnline: false, vfNumber: 2, queues: 0, interrupts: 0),
            NVMeSecondaryController(controllerID: 0x22, primaryControllerID: 0, isOnline: false, vfNumber: 1, queues: 0, interrupts: 0),
        ]
        try createVFs(2)
        _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1)
        #expect(Set(sim.virtualizationCommands.map { $0.cdw10 >> 16 }) == [0x22])
        let status = try provisioner.status(pf: pf)
        #expect(status.map(\.controllerID) == [0x21, 0x22])
        #expect(status.map(\.vfAddress) == [vf(1), vf(0)])
        #expect(status.map(\.state) == ["offline", "online"])
    }

    @Test func provisionOfflinesFirstWhenResourcesChange() throws {
        sim.caps.vqFlexibleSecondaryMaximum = 8
        try createVFs(4)
        _ = try provisioner.provision(pf: pf, vfIndex: 1, queues: 2, interrupts: 1)
        sim.sent = []
        let actions = try provisioner.provision(pf: pf, vfIndex: 1, queues: 4, interrupts: 1)
        #expect(actions.count == 4)
        #expect(sim.virtualizationCommands.map(\.cdw10) == [0x0002_0007, 0x0002_0008, 0x0002_0108, 0x0002_0009])
        #expect(sim.virtualizationCommands.map(\.cdw11) == [0, 4, 1, 0])
        #expect(sim.secondaries[1].isOnline && sim.secondaries[1].queues == 4)
    }

    @Test func provisionDryRunSendsOnlyIdentify() throws {
        try createVFs(1)
        let actions = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1, dryRun: true)
        #expect(actions.count == 3)
        #expect(sim.virtualizationCommands.isEmpty)
        #expect(!sim.secondaries[0].isOnline)
    }

    @Test func provisionDryRunWorksBeforeTheVFExists() throws {
        sim.primaryHolds(vq: 8, vi: 4)  // prepare has not run yet either: the plan would run it first
        let actions = try provisioner.provision(pf: pf, vfIndex: 2, queues: 2, interrupts: 1, dryRun: true)
        #expect(actions.count == 3)
        #expect(actions.last?.description.contains("secondary online of controller 3") == true)
        #expect(sim.virtualizationCommands.isEmpty)
    }

    @Test func provisionValidatesArgumentsBeforeTouchingTheDevice() {
        expectError(.invalidArgument, containing: ["at least 2", "admin queue"]) { _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 1, interrupts: 1) }
        expectError(.invalidArgument, containing: ["at least 1"]) { _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 0) }
        expectError(.invalidArgument, containing: ["VF index -1"]) { _ = try provisioner.provision(pf: pf, vfIndex: -1, queues: 2, interrupts: 1) }
        expectError(.invalidArgument, containing: ["16 bits"]) { _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 70000, interrupts: 1) }
        #expect(sim.sent.isEmpty)
    }

    @Test func provisionChecksThePerSecondaryMaximumAndGranularity() throws {
        try createVFs(4)
        expectError(.noResources, containing: ["4 queue (VQ) resources for VF 0", "at most 2 per secondary controller (VQFRSM)"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 4, interrupts: 1)
        }
        expectError(.noResources, containing: ["at most 1 per secondary controller (VIFRSM)"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 2)
        }
        sim.caps.vqFlexibleSecondaryMaximum = 8
        sim.caps.vqGranularity = 2
        expectError(.invalidArgument, containing: ["units of 2 (VQGRAN)", "multiple of 2"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 3, interrupts: 1)
        }
        #expect(sim.virtualizationCommands.isEmpty)
    }

    @Test func provisionSaysToPrepareWhenThePrimaryHoldsTheResources() throws {
        sim.primaryHolds(vq: 8, vi: 4)
        try createVFs(4)
        expectError(.noResources, containing: ["only 0 of 8 flexible are available on /dev/nvme0", "primary holds 8", "passage nvme prepare 0000:01:00.0"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1)
        }
        #expect(sim.virtualizationCommands.isEmpty)
    }

    @Test func provisionCountsWhatOtherSecondariesHold() throws {
        sim.caps.vqFlexibleTotal = 4
        try createVFs(4)
        _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1)
        _ = try provisioner.provision(pf: pf, vfIndex: 1, queues: 2, interrupts: 1)
        expectError(.noResources, containing: ["only 0 of 4", "secondaries 4", "take them from other secondary controllers"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 2, queues: 2, interrupts: 1)
        }
    }

    @Test func provisionRefusesAVFWithADriverOrWithoutAVF() throws {
        expectError(.notFound, containing: ["VF index 0 of 0000:01:00.0 does not exist (sriov_numvfs is 0)", "create the VFs first"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1)
        }
        try createVFs(2)
        try bind(vf(1), to: "vfio-pci")
        expectError(.vfsInUse, containing: ["VF 0000:01:00.2 (index 1 of 0000:01:00.0) is bound to vfio-pci", "driver/unbind", "sriov_drivers_autoprobe=0"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 1, queues: 2, interrupts: 1)
        }
        expectError(.notFound, containing: ["no secondary controller for VF index 7", "VF indexes 0, 1, 2, 3"]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 7, queues: 2, interrupts: 1)
        }
        #expect(sim.virtualizationCommands.isEmpty)
    }

    @Test func nvmeStatusesBecomeErrorsNamingDeviceCommandAndFix() throws {
        try createVFs(1)
        sim.inject = { $0.opcode == 0x1C && $0.cdw10 & 0xf == 8 && ($0.cdw10 >> 8) & 7 == 1 ? 0x4122 : nil }
        expectError(.nvme, containing: [
            "Virtualization Management: secondary assign VI=1 to controller 1 (opcode 0x1c cdw10=0x00010108 cdw11=0x00000001)",
            "on /dev/nvme0", "NVMe status 0x4122 Invalid Resource Identifier (SCT 1, SC 0x22, do not retry)",
            "passage nvme prepare", "left offline",
        ]) {
            _ = try provisioner.provision(pf: pf, vfIndex: 0, queues: 2, interrupts: 1)
        }
        sim.inject = { $0.opcode == 0x06 ? -EACCES : nil }
        expectError(.nvme, containing: ["Identify Controller on /dev/nvme0 failed", "need root (CAP_SYS_ADMIN)"]) { _ = try provisioner.status(pf: pf) }
        sim.inject = nil
        // the real controller's own refusal: online without resources
        expectError(.nvme, containing: ["secondary online of controller 2", "Invalid Secondary Controller State"]) {
            try NVMeController(path: "/dev/nvme0", transport: sim).virtualizationManagement(action: .secondaryOnline, controllerID: 2)
        }
    }

    @Test func statusMapsVFNumbersToVFAddresses() throws {
        try createVFs(2)
        _ = try provisioner.provision(pf: pf, vfIndex: 1, queues: 2, interrupts: 1)
        let report = try provisioner.report(pf: pf)
        #expect(report.controller == "/dev/nvme0")
        #expect(report.identity.modelNumber == "QEMU NVMe Ctrl")
        #expect(report.primary.assignedToSecondaries(.queue) == 2)
        #expect(report.secondaries.map(\.vfAddress) == [vf(0), vf(1), nil, nil])
        #expect(report.secondaries.map(\.state) == ["offline", "online", "offline", "offline"])
        #expect(report.secondaries[1].queues == 2 && report.secondaries[1].interrupts == 1)
    }

    // MARK: the CLI's error contract

    @Test func cliReportsRefusalsWithExitStatusAndJSON() throws {
        let bin = try passageBinary()
        try bind(pf, to: "vfio-pci")
        let status = try runProcess(bin, ["nvme", "status", pf.description, "--sysfs-root", root.path, "--json"])
        #expect(status.status == 64)
        #expect(status.stderr.contains("\"code\":\"invalid-argument\""))
        #expect(status.stderr.contains("is bound to vfio-pci, not nvme"))
        let provision = try runProcess(bin, ["nvme", "provision", pf.description, "--vf", "0", "--queues", "1", "--interrupts", "1",
                                            "--sysfs-root", root.path])
        #expect(provision.status == 64)
        #expect(provision.stderr.contains("passage: error: 1 queue resources for VF 0 of 0000:01:00.0"))
        let missing = try runProcess(bin, ["nvme", "prepare", "0000:09:00.0", "--sysfs-root", root.path, "--dry-run"])
        #expect(missing.status == 66)
    }
}
