import Foundation
import Testing
@testable import HostPCI
import PassageAPI
@testable import PassageDaemon
import SRIOV
import SysfsFixtures

typealias Fault = SimulatedKernel.Fault

/// The NVMe admin path with faults: the `n`th command from when it is armed fails. An errno means the
/// command never reached the controller; a timeout means it ran but its completion was lost (the
/// kernel's admin timeout cancels it and the ioctl returns EINTR), so the host cannot know it ran.
final class FaultyNVMeTransport: NVMeAdminTransport, @unchecked Sendable {
    let inner: SimulatedNVMePrimary
    private(set) var submitted = 0
    private var planned: (fault: Fault, n: Int)?
    /// The command the planned fault hit (counted as `submitted` counts).
    private(set) var firedAt: Int?
    /// Once the planned fault has fired, the `from`th command after it fails with `fault`, and with
    /// `persistent` every command after that too.
    var afterwards: (fault: Fault, from: Int, persistent: Bool)?
    /// Called when the planned fault fires.
    var onPlannedFault: (() -> Void)?

    init(_ inner: SimulatedNVMePrimary) { self.inner = inner }

    func inject(_ fault: Fault, atCommand n: Int) { planned = (fault, n + submitted) }
    var plannedFaultFired: Bool { planned == nil }
    /// Commands sent since the planned fault fired.
    var sinceFault: Int { firedAt.map { submitted - $0 } ?? 0 }

    func submit(_ command: NVMeAdminCommand, data: inout [UInt8], result: inout UInt32) -> Int32 {
        submitted += 1
        if let p = planned, p.n == submitted {
            planned = nil
            firedAt = submitted
            onPlannedFault?()
            return fail(p.fault, command, &data, &result)
        }
        if let a = afterwards, let f = firedAt, submitted - f == a.from || (a.persistent && submitted - f > a.from) {
            return fail(a.fault, command, &data, &result)
        }
        return inner.submit(command, data: &data, result: &result)
    }

    private func fail(_ fault: Fault, _ command: NVMeAdminCommand, _ data: inout [UInt8], _ result: inout UInt32) -> Int32 {
        switch fault {
        case let .errno(e): return -e
        case .noReaction:
            _ = inner.submit(command, data: &data, result: &result)
            return -EINTR
        }
    }
}

/// One host for one run: the small fixture plus an SR-IOV NVMe PF (0000:06:00.0, on nvme, VFs
/// 06:00.1…), the simulated kernel, a model of the NVMe controller wired to the PF's `reset` and
/// `sriov_numvfs`, and (for claims) a daemon on it. Every wait is bounded by `timeout`.
final class FaultWorld: @unchecked Sendable {
    static let timeout = 0.04
    static func a(_ s: String) -> PCIAddress { try! PCIAddress(parsing: s) }
    static let nvmePF = a("06:00.0")

    let fixture: SysfsFixture
    let kernel: SimulatedKernel
    let nvme = SimulatedNVMePrimary(secondaries: 4)
    let admin: FaultyNVMeTransport
    var daemon: Daemon?
    /// How many PF resets the controller ignores from now (its pending allocation stays pending, its
    /// secondaries stay).
    var resetsToIgnore = 0
    var root: SysfsRoot { fixture.root }

    init(primaryHolds: (vq: UInt16, vi: UInt16) = (0, 0), smallPFVFs: Int = 0) throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        for d in ["vfio-pci", "nvme", "iavf", "virtio-pci"] { try fixture.addDriver(d) }
        var pf = FixtureDevice(Self.nvmePF, vendor: 0x1b36, device: 0x0010, class: 0x010802)
        pf.driver = "nvme"
        pf.iommuGroup = 6
        pf.capabilities = [.pcie(portType: 0), .sriov(initialVFs: 4, totalVFs: 4, numVFs: 0, offset: 1, stride: 1, vfDeviceID: 0x0010)]
        pf.sriov = FixtureSRIOV(totalVFs: 4, numVFs: 0, offset: 1, stride: 1, vfDeviceID: 0x0010, vfBars: [])
        let pfDir = try fixture.add(pf)
        try FileManager.default.createDirectory(atPath: pfDir + "/nvme/nvme0", withIntermediateDirectories: true)
        try "live\n".write(toFile: pfDir + "/nvme/nvme0/state", atomically: false, encoding: .utf8)
        try "".write(toFile: pfDir + "/reset", atomically: false, encoding: .utf8)

        kernel = SimulatedKernel(fixture: fixture)
        admin = FaultyNVMeTransport(nvme)
        kernel.naturalDrivers = [Self.a("05:00.0"): "e1000", Self.a("05:00.1"): "e1000", Self.a("00:03.0"): "virtio-pci",
                                 Self.a("01:02.0"): "iavf", Self.a("01:02.1"): "iavf"]
        StandardFixtures.teachSmallVFs(kernel)
        kernel.vfTemplates[Self.nvmePF] = { i in
            var vf = FixtureDevice(try! PCIAddress(bus: 6, device: 0, function: UInt8(i + 1)), vendor: 0x1b36, device: 0x0010, class: 0x010802)
            vf.iommuGroup = 60 + i
            return vf
        }
        for i in 0..<4 { kernel.naturalDrivers[try PCIAddress(bus: 6, device: 0, function: UInt8(i + 1))] = "nvme" }
        nvme.primaryHolds(vq: primaryHolds.vq, vi: primaryHolds.vi)
        let pfRel = "bus/pci/devices/" + Self.nvmePF.description
        kernel.afterWrite = { [nvme, weak self] path, value in
            if path == pfRel + "/reset" && value == "1" {
                if let w = self, w.resetsToIgnore > 0 { w.resetsToIgnore -= 1 } else { nvme.reset() }
            }
            if path == pfRel + "/sriov_numvfs", let n = Int(value) { nvme.vfsEnabled(n) }
        }
        // The small fixture's PF starts with `smallPFVFs` VFs (its standard two are replaced).
        try kernel.write("0", to: root.devicePath(Self.a("01:00.0")) + "/sriov_numvfs")
        if smallPFVFs > 0 { try kernel.write("\(smallPFVFs)", to: root.devicePath(Self.a("01:00.0")) + "/sriov_numvfs") }
        kernel.writesReset()
    }

    deinit {
        fixture.remove()
        if daemon != nil { try? FileManager.default.removeItem(atPath: stateDir) }
    }

    var stateDir: String { fixture.root.path + ".state" }

    func startDaemon() async throws -> Daemon {
        let d = try Daemon(stateDirectory: stateDir, root: root, writer: kernel,
                           usage: HostUsage(root: root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }))
        d.claims.bindTimeout = Self.timeout
        try await d.claims.reconcile()
        daemon = d
        return d
    }

    var binder: DriverBinder {
        var b = DriverBinder(root: root, writer: kernel)
        b.bindTimeout = Self.timeout
        return b
    }

    var passthrough: PassthroughBinder {
        PassthroughBinder(binder: binder, usage: HostUsage(root: root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }))
    }

    var provisioning: VFProvisioning {
        var m = VFManager(root: root, writer: kernel)
        m.linkTimeout = Self.timeout
        m.writeTimeout = 2
        return VFProvisioning(manager: m, passthrough: passthrough)
    }

    var nvmeResources: NVMeVFResources {
        let admin = self.admin
        return NVMeVFResources(provisioner: NVMeVFProvisioner(root: root, writer: kernel, resetTimeout: 1) { (path: String) throws(SRIOVError) in
            NVMeController(path: path, transport: admin)
        }, queues: 2, interrupts: 1)
    }

    /// Everything a device operation may change, one line each: every function's driver and
    /// `driver_override`, every PF's `sriov_numvfs` and `sriov_drivers_autoprobe`, the NVMe
    /// controller's primary allocation and secondary controllers, and the daemon's claims, holds
    /// and unfinished intents (claims by state and devices: ids differ between runs).
    func snapshot() throws -> [String] {
        var lines: [String] = []
        for d in try PCIInventory(root: root, lookUpNames: false).devices() {
            var line = "\(d.address) \(d.driver ?? "-")/\(d.driverOverride ?? "-")"
            if let s = d.sriov { line += " numvfs=\(s.numVFs) autoprobe=\(s.driversAutoprobe.map { $0 ? "1" : "0" } ?? "?")" }
            lines.append(line)
        }
        let c = nvme.caps
        lines.append("nvme primary vq=\(c.vqFlexibleAllocatedToPrimary) vi=\(c.viFlexibleAllocatedToPrimary) next=\(nvme.nextPrimary.vq)/\(nvme.nextPrimary.vi) assigned=\(c.vqFlexibleAssigned)/\(c.viFlexibleAssigned)")
        for s in nvme.secondaries { lines.append("nvme sc\(s.controllerID) \(s.isOnline ? "online" : "offline") vq=\(s.queues) vi=\(s.interrupts)") }
        if let store = daemon?.store {
            for claim in try store.claims() where claim.state != .failed {
                lines.append("claim \(claim.state.rawValue) " + claim.devices.map { "\($0.address)@\($0.iommuGroup)" }.sorted().joined(separator: ","))
            }
            let holds = try store.groupHolds()
            lines.append("holds " + holds.keys.sorted().map(String.init).joined(separator: ","))
            lines.append("pending intents \(try store.pendingIntents().count)")
        }
        return lines
    }
}

/// Fault injection in the device-operation layer: every sysfs write and every NVMe admin command of
/// an operation fails in turn (ENODEV, EBUSY, EIO, timeout), and each run must end with the host
/// exactly as before or exactly as requested (the states of a clean run), never in between, with an
/// error that names the device.
@Suite(.serialized) struct FaultInjectionTests {
    struct Operation: Sendable {
        var name: String
        /// Builds the host and brings it to the state before the operation.
        var setUp: @Sendable () async throws -> FaultWorld
        var run: @Sendable (FaultWorld) async throws -> Void
        /// An error must name one of these.
        var names: [String]
    }

    enum Point: CustomStringConvertible {
        case write(Int)
        case command(Int)
        var description: String {
            switch self {
            case let .write(k): "sysfs write \(k)"
            case let .command(k): "admin command \(k)"
            }
        }
    }

    struct Sweep: CustomStringConvertible {
        var name: String
        var cases = 0
        var passed = 0
        var failures: [String] = []
        var description: String { "\(name): \(passed)/\(cases) cases end as before or as requested" }
    }

    /// Runs `op` cleanly (counting its writes and commands, recording before and after), then once
    /// per (point, fault), each on a fresh host.
    static func sweep(_ op: Operation, commands: Bool = false) async throws -> Sweep {
        let clean = try await op.setUp()
        let before = try clean.snapshot()
        let (w0, c0, r0) = (clean.kernel.writeAttempts, clean.admin.submitted, clean.kernel.writes.count)
        try await op.run(clean)
        let after = try clean.snapshot()
        let writes = clean.kernel.writeAttempts - w0
        let cmds = clean.admin.submitted - c0
        let paths = clean.kernel.writes.dropFirst(r0).map(\.path)
        #expect(before != after, "\(op.name): the clean run changed nothing")
        #expect(writes > 0, "\(op.name): the clean run wrote nothing")
        let points = (1...max(writes, 1)).map(Point.write) + (commands ? (0..<cmds).map { Point.command($0 + 1) } : [])
        var sweep = Sweep(name: op.name)
        for point in points {
            for fault in Fault.all {
                // A timeout is a write the kernel accepts and then does not act on: a probe or bind
                // that never binds, VFs that never appear, a reset the controller ignores. Writes
                // the kernel completes inside the write(2) itself (driver_override, unbind,
                // sriov_drivers_autoprobe) either fail or take effect, so they get the errnos only.
                if case let .write(k) = point, fault == .noReaction, k <= paths.count,
                   ["/driver_override", "/unbind", "/sriov_drivers_autoprobe"].contains(where: paths[k - 1].hasSuffix) { continue }
                let world = try await op.setUp()
                #expect(try world.snapshot() == before, "\(op.name): set-up is not repeatable")
                switch point {
                case let .write(k): world.kernel.injectFault(fault, atWrite: k)
                case let .command(k): world.admin.inject(fault, atCommand: k)
                }
                var thrown: (any Error)?
                do { try await op.run(world) } catch { thrown = error }
                let end = try world.snapshot()
                let fired = switch point { case .write: world.kernel.plannedFaultFired; case .command: world.admin.plannedFaultFired }
                var problems: [String] = []
                if !fired { problems.append("the fault never fired") }
                if end != before && end != after {
                    let odd = end.indices.filter { i in i < before.count && i < after.count ? end[i] != before[i] && end[i] != after[i] : true }
                    let mixed = odd.isEmpty ? "parts as before, parts as requested: " + end.indices.filter { $0 < before.count && end[$0] != before[$0] }.map { end[$0] }.joined(separator: "; ")
                        : odd.map { i in "\(end[i])" + (i < before.count ? " (before: \(before[i]), requested: \(i < after.count ? after[i] : "-"))" : "") }.joined(separator: "; ")
                    problems.append("left in between: " + mixed)
                }
                if let e = thrown {
                    let text = "\(e)"
                    if !op.names.contains(where: text.contains) { problems.append("error names none of \(op.names): \(text)") }
                } else if end != after {
                    problems.append("no error, but the host is not as requested")
                }
                sweep.cases += 1
                if problems.isEmpty { sweep.passed += 1 } else {
                    sweep.failures.append("\(op.name), \(point), \(fault): " + problems.joined(separator: "; ") + (thrown.map { " [error: \($0)]" } ?? ""))
                }
            }
        }
        print("fault injection — \(sweep) (\(writes) writes\(commands ? ", \(cmds) admin commands" : ""))")
        for f in sweep.failures { Issue.record(Comment(rawValue: f)) }
        return sweep
    }

    static let ops: [String: Operation] = [
        "bind": Operation(name: "bind of one function (01:02.1 iavf → vfio-pci)",
                          setUp: { try FaultWorld(smallPFVFs: 2) },
                          run: { w in _ = try w.passthrough.bind(FaultWorld.a("01:02.1")) },
                          names: ["0000:01:02.1"]),
        "bind-unbound": Operation(name: "bind of an unbound function (00:03.0 → vfio-pci)",
                                  setUp: { try FaultWorld() },
                                  run: { w in _ = try w.passthrough.bind(FaultWorld.a("00:03.0")) },
                                  names: ["0000:00:03.0"]),
        "group": Operation(name: "group bind (05:00.1 with 05:00.0 → vfio-pci)",
                           setUp: { try FaultWorld() },
                           run: { w in _ = try w.passthrough.bind(FaultWorld.a("05:00.1"), wholeGroup: true) },
                           names: ["0000:05:00.0", "0000:05:00.1"]),
        "vf": Operation(name: "VF creation (01:00.0, 3 VFs)",
                        setUp: { try FaultWorld() },
                        run: { w in _ = try w.provisioning.create(.init(pf: FaultWorld.a("01:00.0"), count: 3)) },
                        names: ["0000:01:00.0"]),
        "vf-driver": Operation(name: "VF creation with --driver vfio-pci (01:00.0, 2 VFs)",
                               setUp: { try FaultWorld() },
                               run: { w in _ = try w.provisioning.create(.init(pf: FaultWorld.a("01:00.0"), count: 2, driver: "vfio-pci")) },
                               names: ["0000:01:00.0", "0000:01:02.0", "0000:01:02.1"]),
        "vf-recount": Operation(name: "VF re-creation 2 → 3 with --driver vfio-pci (01:00.0)",
                                setUp: {
                                    // VF 0 lent to vfio-pci, VF 1 on its host driver.
                                    let w = try FaultWorld(smallPFVFs: 2)
                                    _ = try w.binder.bind(FaultWorld.a("01:02.0"), to: "vfio-pci")
                                    return w
                                },
                                run: { w in _ = try w.provisioning.create(.init(pf: FaultWorld.a("01:00.0"), count: 3, driver: "vfio-pci")) },
                                names: ["0000:01:00.0", "0000:01:02.0", "0000:01:02.1", "0000:01:02.2"]),
        "nvme": Operation(name: "NVMe VF provisioning (06:00.0, 2 VFs, 2 VQ + 1 VI each, vfio-pci)",
                          setUp: { try FaultWorld() },
                          run: { w in _ = try w.provisioning.create(.init(pf: FaultWorld.nvmePF, count: 2, driver: "vfio-pci", resources: w.nvmeResources)) },
                          names: ["0000:06:00.0", "/dev/nvme0", "0000:06:00.1", "0000:06:00.2"]),
        "nvme-prepare": Operation(name: "NVMe VF provisioning from an unprepared primary (06:00.0, 2 VFs)",
                                  setUp: { try FaultWorld(primaryHolds: (4, 2)) },
                                  run: { w in _ = try w.provisioning.create(.init(pf: FaultWorld.nvmePF, count: 2, resources: w.nvmeResources)) },
                                  names: ["0000:06:00.0", "/dev/nvme0", "0000:06:00.1", "0000:06:00.2"]),
        "claim": Operation(name: "claim create (05:00.0 whole group, 01:02.1)",
                           setUp: { let w = try FaultWorld(smallPFVFs: 2); _ = try await w.startDaemon(); return w },
                           run: { w in _ = try await w.daemon!.claims.create(ClaimRequest(owner: "vm-1", devices: ["0000:05:00.0", "0000:01:02.1"])) },
                           names: ["0000:05:00.0", "0000:05:00.1", "0000:01:02.1"]),
        "release": Operation(name: "claim release (05:00.0 whole group, 01:02.1)",
                             setUp: {
                                 let w = try FaultWorld(smallPFVFs: 2)
                                 let d = try await w.startDaemon()
                                 _ = try await d.claims.create(ClaimRequest(owner: "vm-1", devices: ["0000:05:00.0", "0000:01:02.1"]))
                                 return w
                             },
                             run: { w in
                                 let d = w.daemon!
                                 let id = try d.store.claims(states: [.active]).first!.id
                                 _ = try await d.claims.release(id: id)
                             },
                             names: ["0000:05:00.0", "0000:05:00.1", "0000:01:02.1"]),
    ]

    @Test(arguments: ["bind", "bind-unbound", "group"])
    func bind(_ op: String) async throws { _ = try await Self.sweep(Self.ops[op]!) }

    @Test(arguments: ["vf", "vf-driver", "vf-recount"])
    func vfCreation(_ op: String) async throws { _ = try await Self.sweep(Self.ops[op]!) }

    @Test func nvmeProvisioning() async throws { _ = try await Self.sweep(Self.ops["nvme"]!, commands: true) }

    /// Freeing the primary's flexible resources (an allocation of 0 and a PF reset) is undone when a
    /// later step fails: another allocation and, where it had taken effect, another PF reset.
    @Test func nvmeProvisioningFromAnUnpreparedPrimary() async throws {
        _ = try await Self.sweep(Self.ops["nvme-prepare"]!, commands: true)
    }

    /// What meets the undo of a failed creation from an unprepared primary.
    enum UndoFault: CustomStringConvertible {
        /// The `k`th command after the first fault fails (the errno, or its completion lost), once.
        case command(Int, Fault)
        /// The controller stops answering from the `k`th command after the first fault on.
        case commands(from: Int, Fault)
        /// The next PF reset fails (EIO) / every one does.
        case resetFails(always: Bool)
        /// The controller ignores the next PF reset / every one.
        case resetIgnored(always: Bool)

        /// Faults a few retries outlast: the undo must still end exactly as before.
        var isTransient: Bool {
            switch self {
            case .command: true
            case .commands: false
            case let .resetFails(always), let .resetIgnored(always): !always
            }
        }

        var description: String {
            switch self {
            case let .command(k, f): "undo command \(k) \(f)"
            case let .commands(k, f): "controller answering \(f) from undo command \(k) on"
            case let .resetFails(always): always ? "every PF reset failing (EIO)" : "the undo's PF reset failing once (EIO)"
            case let .resetIgnored(always): always ? "every PF reset ignored" : "the undo's PF reset ignored once"
            }
        }
    }

    /// The undo of a failed creation from an unprepared primary meets faults of its own.
    ///
    /// A fault that passes (each of the undo's commands failing once, its PF reset failing or ignored
    /// once) is retried: the host must end exactly as before, as in the sweeps.
    ///
    /// A fault that stays (the controller no longer answering from each of the undo's commands on,
    /// with ENODEV or lost completions; every PF reset failing or ignored) cannot be outlasted, and
    /// "as before" cannot hold for the primary's flexible allocation: only the controller can change
    /// it. What must hold instead: everything else is exactly as before; the error names the PF and
    /// its controller, says what the primary holds now (checked against the model) or that it could
    /// not be read, and gives the commands that put it back; and those commands, run once the
    /// controller answers again, bring the host back exactly as before.
    @Test func nvmeUndoThatFailsToo() async throws {
        let op = Self.ops["nvme-prepare"]!
        let before = try await op.setUp().snapshot()
        var sweep = Sweep(name: "NVMe VF provisioning from an unprepared primary with its undo failing too")
        var undoSizes: [String] = []
        var transient = 0
        var asBefore = 0
        // The first fault: the allocation of VI=0 (before the PF reset), VF 0's and VF 1's secondary online.
        for point in [7, 14, 20] {
            let clean = try await op.setUp()
            clean.admin.inject(.errno(EIO), atCommand: point)
            do { try await op.run(clean); Issue.record("admin command \(point): no error") } catch {}
            #expect(try clean.snapshot() == before, "admin command \(point): the undo alone does not restore the host")
            let undoCommands = clean.admin.sinceFault
            undoSizes.append("\(undoCommands) after a fault at command \(point)")
            var faults: [UndoFault] = (1...max(undoCommands, 1)).flatMap { k in Fault.all.map { UndoFault.command(k, $0) } }
            faults += [.resetFails(always: false), .resetIgnored(always: false)]
            faults += (1...max(undoCommands, 1)).flatMap { k in [UndoFault.commands(from: k, .errno(ENODEV)), .commands(from: k, .noReaction)] }
            faults += [.resetFails(always: true), .resetIgnored(always: true)]
            for undoFault in faults {
                let w = try await op.setUp()
                w.admin.inject(.errno(EIO), atCommand: point)
                switch undoFault {
                case let .command(k, f): w.admin.afterwards = (f, k, false)
                case let .commands(k, f): w.admin.afterwards = (f, k, true)
                case let .resetFails(always):
                    w.admin.onPlannedFault = { [kernel = w.kernel] in
                        if always { kernel.failWrites(pathSuffix: "/reset", errno: EIO) } else { kernel.failNextWrite(pathSuffix: "/reset", errno: EIO) }
                    }
                case let .resetIgnored(always): w.admin.onPlannedFault = { [weak w] in w?.resetsToIgnore = always ? .max : 1 }
                }
                var thrown: (any Error)?
                do { try await op.run(w) } catch { thrown = error }
                let end = try w.snapshot()
                let text = thrown.map { "\($0)" } ?? ""
                var problems: [String] = []
                if thrown == nil { problems.append("no error") }
                if !op.names.contains(where: text.contains) { problems.append("the error names none of \(op.names)") }
                if undoFault.isTransient { transient += 1 }
                if end == before { if !undoFault.isTransient { asBefore += 1 } } else if undoFault.isTransient {
                    problems.append("a fault the undo retries left " + end.filter { !before.contains($0) }.joined(separator: "; "))
                } else {
                    if !text.contains(FaultWorld.nvmePF.description) { problems.append("the error does not name the PF") }
                    let rest = { (lines: [String]) in lines.filter { !$0.hasPrefix("nvme primary") } }
                    if rest(end) != rest(before) {
                        problems.append("left in between beyond the primary's allocation: " + rest(end).filter { !rest(before).contains($0) }.joined(separator: "; "))
                    }
                    let pfDir = w.root.devicePath(FaultWorld.nvmePF)
                    for fix in ["`nvme virt-mgmt /dev/nvme0 --cntlid=0 --rt=0 --act=1 --nr=4`", "`nvme virt-mgmt /dev/nvme0 --cntlid=0 --rt=1 --act=1 --nr=2`",
                                "`echo 1 > \(pfDir)/reset`"] where !text.contains(fix) {
                        problems.append("the error lacks the fix \(fix)")
                    }
                    let c = w.nvme.caps
                    let holds = "It holds \(c.vqFlexibleAllocatedToPrimary) VQ and \(c.viFlexibleAllocatedToPrimary) VI now"
                    if !text.contains("What it holds now could not be read") && !text.contains(holds) {
                        problems.append("the error does not say \(holds.debugDescription)")
                    }
                    // The fix, once the controller answers and resets again.
                    w.admin.afterwards = nil
                    w.resetsToIgnore = 0
                    w.kernel.stopFailingWrites()
                    let controller = NVMeController(path: "/dev/nvme0", transport: w.admin)
                    try controller.virtualizationManagement(action: .primaryFlexibleAllocation, resource: .queue, controllerID: 0, count: 4)
                    try controller.virtualizationManagement(action: .primaryFlexibleAllocation, resource: .interrupt, controllerID: 0, count: 2)
                    try w.kernel.write("1", to: pfDir + "/reset")
                    let fixed = try w.snapshot()
                    if fixed != before {
                        problems.append("the reported fix leaves " + fixed.filter { !before.contains($0) }.joined(separator: "; "))
                    }
                }
                sweep.cases += 1
                if problems.isEmpty { sweep.passed += 1 } else {
                    sweep.failures.append("admin command \(point) then \(undoFault): " + problems.joined(separator: "; ") + " [error: \(text)]")
                }
            }
        }
        print("fault injection — \(sweep.name): \(sweep.passed)/\(sweep.cases) cases pass: \(transient) with a fault the undo outlasts must end as before; "
            + "\(sweep.cases - transient) with one that stays must end as before (\(asBefore) do) or with only the primary's allocation changed, reported, "
            + "and the reported fix restoring it (the undo alone sends \(undoSizes.joined(separator: ", ")))")
        for f in sweep.failures { Issue.record(Comment(rawValue: f)) }
    }

    @Test(arguments: ["claim", "release"])
    func claims(_ op: String) async throws { _ = try await Self.sweep(Self.ops[op]!) }
}
