import HostPCI

#if canImport(Glibc)
import Glibc
#endif

/// Gives the secondary controllers behind an NVMe PF's VFs their queue (VQ) and interrupt (VI)
/// resources and brings them online, with admin commands on the PF's controller character device.
/// A VF of an SR-IOV NVMe controller does nothing until this is done.
///
/// Around writing `sriov_numvfs`, the VF lifecycle calls:
/// 1. `prepareForVFs(pf:dryRun:)` before the VFs exist: the primary gives up its flexible resources
///    (Virtualization Management, primary flexible allocation of 0 VQ and 0 VI), and the PF is reset so
///    that takes effect. Skipped when the primary already holds none.
/// 2. `provision(pf:vfIndex:queues:interrupts:dryRun:)` for each VF once it exists: offline its
///    secondary controller if needed, assign VQ and VI, online.
///
/// Both are idempotent and return the changes made (or, with `dryRun`, to be made) as `HostAction`s;
/// identify commands (reads) are sent in dry runs too. Nothing is changed for a VF bound to a driver.
///
/// When a later step of the creation fails, `restore(pf:secondaries:)` puts the secondary controllers
/// back and `undoPreparation(_:secondaries:)` gives the primary its flexible resources back (another
/// allocation and another PF reset).
public struct NVMeVFProvisioner: Sendable {
    public let root: SysfsRoot
    public let writer: any SysfsWriter
    /// Where the controller character devices live (`/dev`).
    public var deviceDirectory: String
    /// How long to wait for the PF's controller to be `live` again after a reset.
    public var resetTimeout: Double
    private let openController: @Sendable (String) throws(SRIOVError) -> NVMeController

    /// - Parameters:
    ///   - root: the sysfs tree the PF is found in.
    ///   - writer: how the PF's `reset` attribute is written.
    ///   - openController: opens `/dev/nvmeN`; tests pass a simulated controller.
    public init(root: SysfsRoot, writer: any SysfsWriter, deviceDirectory: String = "/dev", resetTimeout: Double = 30,
                openController: @escaping @Sendable (String) throws(SRIOVError) -> NVMeController = { (path: String) throws(SRIOVError) in
                    try NVMeController(path: path)
                }) {
        self.root = root
        self.writer = writer
        self.deviceDirectory = deviceDirectory
        self.resetTimeout = resetTimeout
        self.openController = openController
    }

    /// What `passage nvme status` shows: the controller, its primary capabilities, its secondaries.
    public struct Report: Sendable, Hashable {
        public var pf: PCIAddress
        /// `/dev/nvme0`
        public var controller: String
        public var identity: NVMeControllerIdentity
        public var primary: NVMePrimaryControllerCapabilities
        /// In list order, each with its VF's address where the VF exists.
        public var secondaries: [NVMeSecondaryController]
    }

    // MARK: locating the controller

    /// The character device of the controller the nvme driver created for `pf`
    /// (`ROOT/bus/pci/devices/PF/nvme/nvmeN` → `/dev/nvmeN`).
    /// Throws when the device does not exist or is not bound to nvme, saying how to fix that.
    public func controllerPath(pf: PCIAddress) throws(SRIOVError) -> String {
        let dir = root.devicePath(pf)
        guard NVMeSysfs.exists(dir) else {
            throw SRIOVError(code: .notFound, message: "no PCI device \(pf) under \(root.pciDevicesPath); run `passage devices --class 0108` to list NVMe controllers")
        }
        let driver = NVMeSysfs.driver(pf, root: root)
        guard driver == "nvme" else {
            let now = driver.map { "is bound to \($0)" } ?? "has no driver"
            throw SRIOVError(code: .invalidArgument, message: "\(pf) \(now), not nvme: NVMe admin commands go through the nvme driver's controller device. "
                + "Bind it: `modprobe nvme`, then `echo \(pf) > \(root.path)/bus/pci/drivers_probe`"
                + (driver == nil ? "" : " after `echo \(pf) > \(dir)/driver/unbind`")
                + " (and clear driver_override if it names another driver)")
        }
        guard let name = NVMeSysfs.controllerNames(pf, root: root).first else {
            throw SRIOVError(code: .nvme, message: "\(pf) is bound to nvme but has no controller under \(dir)/nvme: the driver's probe failed or is still running; see `dmesg | grep nvme`")
        }
        return deviceDirectory + "/" + name
    }

    private func open(_ pf: PCIAddress) throws(SRIOVError) -> (NVMeController, NVMeControllerIdentity, NVMePrimaryControllerCapabilities) {
        let controller = try openController(try controllerPath(pf: pf))
        let identity = try controller.identifyController()
        let caps = try controller.primaryControllerCapabilities(controllerID: identity.controllerID)
        return (controller, identity, caps)
    }

    // MARK: reporting

    /// The PF's controller, its flexible resources and its secondary controllers.
    public func report(pf: PCIAddress) throws(SRIOVError) -> Report {
        let (controller, identity, caps) = try open(pf)
        var secondaries = try controller.secondaryControllers()
        for i in secondaries.indices {
            if let index = secondaries[i].vfIndex {
                secondaries[i].vfAddress = NVMeSysfs.vfAddress(pf: pf, index: index, root: root)
            }
        }
        return Report(pf: pf, controller: controller.path, identity: identity, primary: caps, secondaries: secondaries)
    }

    /// Each secondary controller: state, VQ/VI, VF number and the VF's address where the VF exists.
    public func status(pf: PCIAddress) throws(SRIOVError) -> [NVMeSecondaryController] {
        try report(pf: pf).secondaries
    }

    // MARK: before the VFs exist

    /// What `prepareForVFs` is about to change, handed to its `willChange` before the first command:
    /// what `undoPreparation` needs to give the primary its resources back.
    public struct Preparation: Sendable, Hashable {
        public var pf: PCIAddress
        /// The primary controller's id (CNTLID).
        public var controllerID: UInt16
        /// The primary's flexible allocation before, for each resource type being freed.
        public var previous: [NVMeAdminCommand.Resource: Int]

        public init(pf: PCIAddress, controllerID: UInt16, previous: [NVMeAdminCommand.Resource: Int]) {
            self.pf = pf
            self.controllerID = controllerID
            self.previous = previous
        }

        /// "4 VQ and 2 VI"
        var counts: String { Self.counts(previous) }

        static func counts(_ c: [NVMeAdminCommand.Resource: Int]) -> String {
            NVMeAdminCommand.Resource.allCases.compactMap { r in c[r].map { "\($0) \(r.abbreviation)" } }.joined(separator: " and ")
        }
    }

    /// Frees the primary controller's flexible resources for the secondaries: primary flexible
    /// allocation of 0 VQ and 0 VI, then a PF reset (`write "1" > PF/reset`) so it takes effect, then
    /// waits for the controller to be live and checks the allocation is 0.
    ///
    /// Returns no actions when the primary already holds no flexible resources. Refuses while the PF
    /// has VFs: the reset would take them away. `willChange` is called once, right before the first
    /// command that changes anything (not in a dry run), with what `undoPreparation` needs; if it
    /// throws (it could not record that), nothing is changed.
    public func prepareForVFs(pf: PCIAddress, dryRun: Bool = false,
                              willChange: (Preparation) throws(SRIOVError) -> Void = { _ in }) throws(SRIOVError) -> [HostAction] {
        let (controller, identity, caps) = try open(pf)
        let commands = NVMeAdminCommand.Resource.allCases
            .filter { caps.supports($0) && caps.allocatedToPrimary($0) != 0 }
            .map { NVMeAdminCommand.virtualizationManagement(action: .primaryFlexibleAllocation, resource: $0,
                                                              controllerID: identity.controllerID, count: 0) }
        guard !commands.isEmpty else { return [] }

        let dir = root.devicePath(pf)
        if let n = NVMeSysfs.read(dir + "/sriov_numvfs").flatMap({ Int($0) }), n > 0 {
            throw SRIOVError(code: .vfsInUse, message: "\(pf) has \(n) VF\(n == 1 ? "" : "s"); freeing the primary controller's flexible resources "
                + "needs a PF reset, which would remove them: remove the VFs first (`passage vf remove \(pf)` or `echo 0 > \(dir)/sriov_numvfs`)")
        }
        let resetPath = dir + "/reset"
        guard NVMeSysfs.exists(resetPath) else {
            throw SRIOVError(code: .notSupported, message: "\(pf) has no reset attribute, so the primary flexible allocation cannot take effect: "
                + "the kernel knows no reset method for it (see \(dir)/reset_method)")
        }
        let name = NVMeSysfs.lastComponent(controller.path)
        var actions = commands.map { $0.hostAction(device: controller.path) }
        actions.append(.write(path: resetPath, value: "1"))
        actions.append(.wait("controller \(name) of \(pf) to be live after the reset"))
        guard !dryRun else { return actions }

        var previous: [NVMeAdminCommand.Resource: Int] = [:]
        for r in NVMeAdminCommand.Resource.allCases where caps.supports(r) && caps.allocatedToPrimary(r) != 0 { previous[r] = caps.allocatedToPrimary(r) }
        try willChange(Preparation(pf: pf, controllerID: identity.controllerID, previous: previous))
        for c in commands { try controller.execute(c) }
        do {
            try writer.write("1", to: resetPath)
        } catch {
            throw SRIOVError(code: .io, message: "resetting \(pf) so the primary flexible allocation takes effect failed: \(error.message)", errno: error.errno)
        }
        try waitUntilLive(pf: pf, controllerName: name)
        // The allocation shows in the capabilities only after the reset: read it back.
        let after = try retrying { () throws(SRIOVError) in try controller.primaryControllerCapabilities(controllerID: identity.controllerID) }
        for r in NVMeAdminCommand.Resource.allCases where after.supports(r) && after.allocatedToPrimary(r) != 0 {
            throw SRIOVError(code: .nvme, message: "\(controller.path): the primary still holds \(after.allocatedToPrimary(r)) flexible \(r.abbreviation) resources "
                + "after the allocation of 0 and a reset of \(pf); the controller did not apply it (try a cold reset: power-cycle or remove and rescan the PF)")
        }
        return actions
    }

    // MARK: after the VFs exist

    /// Gives the secondary controller of VF `vfIndex` (0-based, `virtfnN`) `queues` VQ and
    /// `interrupts` VI resources and brings it online. The secondary is found by its VF number
    /// (VFN = index + 1) in the secondary controller list.
    ///
    /// No actions when it is already online with exactly these resources. Otherwise: secondary
    /// offline (if online), secondary assign VQ, secondary assign VI, secondary online.
    ///
    /// The VF must exist and have no driver. In a dry run the VF may not exist yet (a plan that
    /// creates it first): the commands are still listed, checked against the controller's fixed
    /// limits but not against what is free now.
    ///
    /// - Parameters:
    ///   - queues: VQ resources, admin queue included: at least 2 (admin + 1 I/O queue pair).
    ///   - interrupts: VI resources (MSI-X vectors): at least 1.
    public func provision(pf: PCIAddress, vfIndex: Int, queues: Int, interrupts: Int, dryRun: Bool = false) throws(SRIOVError) -> [HostAction] {
        try Self.validateArguments(pf: pf, vfIndex: vfIndex, queues: queues, interrupts: interrupts)
        let (controller, _, caps) = try open(pf)
        let secondaries = try controller.secondaryControllers()
        guard let sc = secondaries.first(where: { $0.vfNumber == UInt16(vfIndex + 1) }) else {
            let known = secondaries.compactMap(\.vfIndex).sorted()
            throw SRIOVError(code: .notFound, message: "\(controller.path) (\(pf)) has no secondary controller for VF index \(vfIndex) (VF number \(vfIndex + 1)); "
                + (known.isEmpty ? "it lists no secondary controllers with a VF" : "it has them for VF indexes \(known.map(String.init).joined(separator: ", "))"))
        }
        if sc.isOnline && Int(sc.queues) == queues && Int(sc.interrupts) == interrupts { return [] }

        let vf = NVMeSysfs.vfAddress(pf: pf, index: vfIndex, root: root)
        // A dry run ahead of the VFs' creation (`vf create --dry-run`): the plan prepares the PF and
        // creates the VF first, which changes what is free, so only the fixed limits are checked.
        let planned = dryRun && vf == nil
        try Self.validateResources(caps: caps, secondary: sc, queues: queues, interrupts: interrupts, pf: pf,
                                   controller: controller.path, checkFree: !planned)
        if let vf {
            if let driver = NVMeSysfs.driver(vf, root: root) {
                throw SRIOVError(code: .vfsInUse, message: "VF \(vf) (index \(vfIndex) of \(pf)) is bound to \(driver); its secondary controller \(sc.controllerID) "
                    + "must not change under a driver: unbind it first (`echo \(vf) > \(root.devicePath(vf))/driver/unbind`) and create VFs with "
                    + "sriov_drivers_autoprobe=0 so no driver takes them before they are provisioned")
            }
        } else if !dryRun {
            let n = NVMeSysfs.read(root.devicePath(pf) + "/sriov_numvfs") ?? "?"
            throw SRIOVError(code: .notFound, message: "VF index \(vfIndex) of \(pf) does not exist (sriov_numvfs is \(n)); a secondary controller "
                + "can only go online while its VF exists: create the VFs first (`passage vf create \(pf) --count \(vfIndex + 1)`)")
        }

        var commands: [NVMeAdminCommand] = []
        if sc.isOnline {
            commands.append(.virtualizationManagement(action: .secondaryOffline, controllerID: sc.controllerID))
        }
        commands.append(.virtualizationManagement(action: .secondaryAssign, resource: .queue, controllerID: sc.controllerID, count: UInt16(queues)))
        commands.append(.virtualizationManagement(action: .secondaryAssign, resource: .interrupt, controllerID: sc.controllerID, count: UInt16(interrupts)))
        commands.append(.virtualizationManagement(action: .secondaryOnline, controllerID: sc.controllerID))
        let actions = commands.map { $0.hostAction(device: controller.path) }
        guard !dryRun else { return actions }
        for (i, c) in commands.enumerated() {
            do {
                try controller.execute(c)
            } catch where i > 0 {
                // Steps already done cannot be undone usefully (an online controller with the old resources
                // was offlined); say where it stands so the caller can retry.
                throw SRIOVError(code: error.code, message: error.message + "; secondary controller \(sc.controllerID) of VF \(vfIndex) "
                    + "is left offline (its VF is unusable until provisioning succeeds: run it again)", errno: error.errno)
            }
        }
        return actions
    }

    /// Puts secondary controllers back as `secondaries` lists them (from `status` earlier), after a
    /// failed creation: each that differs goes offline, gets its VQ and VI back (the ones giving
    /// resources up first, so the others find them free), and goes online again if it was online
    /// (which needs its VF). The state is read back from the controller, not assumed: a command
    /// whose completion was lost may have run.
    public func restore(pf: PCIAddress, secondaries: [NVMeSecondaryController]) throws(SRIOVError) {
        let (controller, _, _) = try open(pf)
        let now = try controller.secondaryControllers()
        let differing = secondaries.compactMap { want -> (want: NVMeSecondaryController, now: NVMeSecondaryController)? in
            guard let current = now.first(where: { $0.controllerID == want.controllerID }),
                  current.isOnline != want.isOnline || current.queues != want.queues || current.interrupts != want.interrupts else { return nil }
            return (want, current)
        }
        for d in differing where d.now.isOnline {
            try controller.execute(.virtualizationManagement(action: .secondaryOffline, controllerID: d.want.controllerID))
        }
        let giving = differing.sorted { (Int($0.want.queues) - Int($0.now.queues)) + (Int($0.want.interrupts) - Int($0.now.interrupts))
            < (Int($1.want.queues) - Int($1.now.queues)) + (Int($1.want.interrupts) - Int($1.now.interrupts)) }
        for d in giving {
            try controller.execute(.virtualizationManagement(action: .secondaryAssign, resource: .queue, controllerID: d.want.controllerID, count: d.want.queues))
            try controller.execute(.virtualizationManagement(action: .secondaryAssign, resource: .interrupt, controllerID: d.want.controllerID, count: d.want.interrupts))
        }
        for d in differing where d.want.isOnline {
            try controller.execute(.virtualizationManagement(action: .secondaryOnline, controllerID: d.want.controllerID))
        }
    }

    /// Gives the primary controller back the flexible resources `prepareForVFs` freed, after a later
    /// step of the creation failed and its VFs are gone again: the primary flexible allocation of
    /// what it held before and, if the allocation in effect differs, a PF reset so it takes effect
    /// (the same sequence as the preparation's), then reads it back.
    ///
    /// The allocation is sent even when the one in effect is already right: an allocation of 0 may be
    /// pending (its command ran, the reset did not or failed), and pending allocations cannot be read.
    /// `secondaries` (as `status` found them before the creation) are put back first, so the allocation
    /// finds the resources free, and again after a reset if they held any (a reset takes every
    /// secondary's resources away). Each command and the reset are tried up to three times (a controller
    /// resetting answers ENODEV or EBUSY for a while; a lost completion may hide a command that ran).
    ///
    /// When it cannot finish, the error names the PF and the controller, says what the primary holds
    /// now (as the controller reports it, or that it could not be read) and gives the commands that put
    /// it back; everything else is as `secondaries` says.
    public func undoPreparation(_ p: Preparation, secondaries: [NVMeSecondaryController]?) throws(SRIOVError) {
        do {
            try giveBack(p, secondaries: secondaries)
        } catch {
            throw undoFailed(p, cause: error)
        }
    }

    private func giveBack(_ p: Preparation, secondaries: [NVMeSecondaryController]?) throws(SRIOVError) {
        if let secondaries { try again(p.pf) { () throws(SRIOVError) in try restore(pf: p.pf, secondaries: secondaries) } }
        let (controller, _, caps) = try again(p.pf) { () throws(SRIOVError) in try open(p.pf) }
        let resources = NVMeAdminCommand.Resource.allCases.filter { p.previous[$0] != nil }
        for r in resources {
            let command = NVMeAdminCommand.virtualizationManagement(action: .primaryFlexibleAllocation, resource: r,
                                                                    controllerID: p.controllerID, count: UInt16(clamping: p.previous[r] ?? 0))
            try again(p.pf) { () throws(SRIOVError) in _ = try controller.execute(command) }
        }
        guard resources.contains(where: { caps.allocatedToPrimary($0) != p.previous[$0] }) else { return }

        let dir = root.devicePath(p.pf)
        if let n = NVMeSysfs.read(dir + "/sriov_numvfs").flatMap({ Int($0) }), n > 0 {
            throw SRIOVError(code: .vfsInUse, message: "\(p.pf) has \(n) VF\(n == 1 ? "" : "s"), and the PF reset that makes the allocation take effect would remove them")
        }
        let name = NVMeSysfs.lastComponent(controller.path)
        var attempt = 1
        while true {
            do throws(SRIOVError) {
                do {
                    try writer.write("1", to: dir + "/reset")
                } catch {
                    throw SRIOVError(code: .io, message: "resetting \(p.pf) so the primary flexible allocation takes effect failed: \(error.message)", errno: error.errno)
                }
                try waitUntilLive(pf: p.pf, controllerName: name)
                let after = try again(p.pf) { () throws(SRIOVError) in try controller.primaryControllerCapabilities(controllerID: p.controllerID) }
                var now: [NVMeAdminCommand.Resource: Int] = [:]
                for r in resources { now[r] = after.allocatedToPrimary(r) }
                if now == p.previous { break }
                throw SRIOVError(code: .nvme, message: "\(controller.path): the primary holds \(Preparation.counts(now)) after the allocation of \(p.counts) and a reset of \(p.pf)")
            } catch {
                // A reset refused or ignored is tried again; a controller that did not come back is not reset again.
                guard attempt < 3, error.code != .timeout else { throw error }
                attempt += 1
                usleep(100_000)
            }
        }
        if let secondaries, secondaries.contains(where: { $0.isOnline || $0.queues != 0 || $0.interrupts != 0 }) {
            try again(p.pf) { () throws(SRIOVError) in try restore(pf: p.pf, secondaries: secondaries) }
        }
    }

    /// The error for an undo that could not finish: what the primary holds now and how to put it back.
    private func undoFailed(_ p: Preparation, cause: SRIOVError) -> SRIOVError {
        let path = (try? controllerPath(pf: p.pf)) ?? deviceDirectory + "/nvmeN"
        var holds = "What it holds now could not be read"
        if let caps = (try? open(p.pf))?.2 {
            var now: [NVMeAdminCommand.Resource: Int] = [:]
            for r in p.previous.keys { now[r] = caps.allocatedToPrimary(r) }
            holds = "It holds \(Preparation.counts(now)) now"
        }
        let dir = root.devicePath(p.pf)
        let fix = NVMeAdminCommand.Resource.allCases.compactMap { r in
            p.previous[r].map { "`nvme virt-mgmt \(path) --cntlid=\(p.controllerID) --rt=\(r.rawValue) --act=1 --nr=\($0)`" }
        }.joined(separator: ", ")
        return SRIOVError(code: cause.code, message: "\(p.pf): giving the NVMe primary controller \(path) back the \(p.counts) flexible resources it held before failed: "
            + "\(cause.message). \(holds), and an allocation Passage sent may be pending, to take effect at the PF's next reset. "
            + "To put it back as it was: \(fix) (nvme-cli), then, with no VFs (`cat \(dir)/sriov_numvfs` is 0), `echo 1 > \(dir)/reset`",
            errno: cause.errno)
    }

    /// Runs `body` up to three times while it fails in the transport (an errno: a controller that is
    /// resetting, a lost completion), waiting for the PF's controller to be live in between.
    private func again<T>(_ pf: PCIAddress, _ body: () throws(SRIOVError) -> T) throws(SRIOVError) -> T {
        var attempt = 1
        while true {
            do { return try body() } catch {
                guard attempt < 3, error.errno != nil || error.code == .timeout else { throw error }
                attempt += 1
                if let name = NVMeSysfs.controllerNames(pf, root: root).first { try? waitUntilLive(pf: pf, controllerName: name) }
                usleep(100_000)
            }
        }
    }

    /// Checks the arguments alone (before any device is touched).
    static func validateArguments(pf: PCIAddress, vfIndex: Int, queues: Int, interrupts: Int) throws(SRIOVError) {
        guard vfIndex >= 0 && vfIndex < Int(UInt16.max) else {
            throw SRIOVError(code: .invalidArgument, message: "VF index \(vfIndex) of \(pf) is out of range: VF indexes start at 0 (virtfn0)")
        }
        guard queues >= 2 else {
            throw SRIOVError(code: .invalidArgument, message: "\(queues) queue resources for VF \(vfIndex) of \(pf): a secondary controller needs at least 2 "
                + "(the admin queue and one I/O queue pair)")
        }
        guard interrupts >= 1 else {
            throw SRIOVError(code: .invalidArgument, message: "\(interrupts) interrupt resources for VF \(vfIndex) of \(pf): a secondary controller needs at least 1")
        }
        guard queues <= Int(UInt16.max), interrupts <= Int(UInt16.max) else {
            throw SRIOVError(code: .invalidArgument, message: "\(queues) queues / \(interrupts) interrupts for VF \(vfIndex) of \(pf): NVMe counts resources in 16 bits")
        }
    }

    /// Checks a request against the primary's flexible resources: supported types, the
    /// per-secondary maximum, the preferred granularity, and what is free (counting what this
    /// secondary holds now, which it gives back when reassigned).
    static func validateResources(caps: NVMePrimaryControllerCapabilities, secondary sc: NVMeSecondaryController,
                                  queues: Int, interrupts: Int, pf: PCIAddress, controller: String,
                                  checkFree: Bool = true) throws(SRIOVError) {
        for r in NVMeAdminCommand.Resource.allCases {
            let want = r == .queue ? queues : interrupts
            let what = r == .queue ? "queue (VQ)" : "interrupt (VI)"
            guard caps.supports(r), caps.flexibleTotal(r) > 0 else {
                throw SRIOVError(code: .noResources, message: "\(controller) (\(pf)) has no flexible \(what) resources to give secondary controllers "
                    + "(CRT=0x\(hex(caps.resourceTypes, 2)), total \(caps.flexibleTotal(r))): its VFs cannot be provisioned this way")
            }
            let maximum = caps.secondaryMaximum(r)
            if maximum > 0 && want > maximum {
                throw SRIOVError(code: .noResources, message: "\(want) \(what) resources for VF \(sc.vfIndex ?? -1) of \(pf): \(controller) allows at most "
                    + "\(maximum) per secondary controller (\(r.abbreviation)FRSM); ask for \(maximum) or fewer")
            }
            let granularity = caps.granularity(r)
            if granularity > 1 && want % granularity != 0 {
                throw SRIOVError(code: .invalidArgument, message: "\(want) \(what) resources for VF \(sc.vfIndex ?? -1) of \(pf): \(controller) assigns them "
                    + "in units of \(granularity) (\(r.abbreviation)GRAN); ask for a multiple of \(granularity)")
            }
            guard checkFree else { continue }
            let current = Int(r == .queue ? sc.queues : sc.interrupts)
            let available = caps.free(r) + current
            if want > available {
                let primary = caps.allocatedToPrimary(r)
                let fix = primary > 0
                    ? "the primary controller still holds \(primary): run `passage nvme prepare \(pf)` before creating VFs (it frees them and resets the PF)"
                    : "ask for fewer, or take them from other secondary controllers (see `passage nvme status \(pf)`)"
                throw SRIOVError(code: .noResources, message: "\(want) \(what) resources for VF \(sc.vfIndex ?? -1) of \(pf) (controller \(sc.controllerID)), but only "
                    + "\(available) of \(caps.flexibleTotal(r)) flexible are available on \(controller) (primary holds \(primary), secondaries \(caps.assignedToSecondaries(r))): \(fix)")
            }
        }
    }

    // MARK: waiting

    /// Polls `PF/nvme/NAME/state` until it reads `live` (a missing attribute counts as live: fixture trees).
    private func waitUntilLive(pf: PCIAddress, controllerName: String) throws(SRIOVError) {
        let path = root.devicePath(pf) + "/nvme/" + controllerName + "/state"
        let deadline = Self.now() + resetTimeout
        var last = ""
        while true {
            guard let state = NVMeSysfs.read(path) else { return }
            if state == "live" { return }
            last = state
            if Self.now() > deadline {
                throw SRIOVError(code: .timeout, message: "controller \(controllerName) of \(pf) is \(last), not live, \(Int(resetTimeout)) s after the reset; "
                    + "see `dmesg | grep nvme` (the driver may have given up on it: rebind it to nvme)")
            }
            usleep(50_000)
        }
    }

    /// Runs `body`, retrying for a short while when the controller is not ready yet (right after a reset).
    private func retrying<T>(_ body: () throws(SRIOVError) -> T) throws(SRIOVError) -> T {
        let deadline = Self.now() + min(resetTimeout, 5)
        while true {
            do { return try body() } catch {
                if Self.now() > deadline { throw error }
                usleep(100_000)
            }
        }
    }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
