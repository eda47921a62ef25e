import ArgumentParser
import HostPCI
import PassageAPI
import SRIOV

/// `passage nvme`: NVMe SR-IOV secondary controllers of a PF, through the admin ioctl on its
/// controller device (no nvme-cli).
struct NVMe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nvme",
        abstract: "Show and provision the secondary controllers behind an NVMe PF's VFs.",
        discussion: """
            An NVMe VF does nothing until its secondary controller has queue (VQ) and interrupt (VI) \
            resources and is online. The usual order: `passage nvme prepare PF` (before VFs exist: the \
            primary gives up its flexible resources; resets the PF), create the VFs with \
            sriov_drivers_autoprobe off, then `passage nvme provision PF --vf I --queues Q --interrupts N` \
            for each VF. The PF must be bound to the nvme driver. Needs root.
            """,
        subcommands: [NVMeStatusCommand.self, NVMePrepareCommand.self, NVMeProvisionCommand.self]
    )
}

struct NVMeStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "The PF's flexible resources and each secondary controller: VF, state, VQ, VI."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("PCI address of the NVMe physical function.", valueName: "PF"))
    var pf: String

    func run() throws {
        try reportingErrors(json: output.json) {
            let a = try parseAddress(pf)
            let report = try NVMeVFProvisioner(root: sysfs.root, writer: KernelSysfsWriter(root: sysfs.root)).report(pf: a)
            if output.json {
                try printJSON(NVMeStatusInfo(report))
                return
            }
            writeStdout(Self.render(report))
        }
    }

    static func render(_ r: NVMeVFProvisioner.Report) -> String {
        let p = r.primary
        func line(_ res: NVMeAdminCommand.Resource) -> String {
            guard p.supports(res) else { return "\(res.abbreviation): no flexible resources" }
            return "\(res.abbreviation): \(p.flexibleTotal(res)) flexible (primary \(p.allocatedToPrimary(res)), secondaries "
                + "\(p.assignedToSecondaries(res)), free \(p.free(res))), at most \(p.secondaryMaximum(res)) per secondary"
        }
        var out = "\(r.pf): \(r.controller), controller \(r.identity.controllerID)"
            + (r.identity.modelNumber.isEmpty ? "" : ", \(r.identity.modelNumber)") + "\n"
        out += "  " + line(.queue) + "\n  " + line(.interrupt) + "\n"
        if r.secondaries.isEmpty { return out + "no secondary controllers\n" }
        var t = Table(headers: ["CONTROLLER", "VF", "ADDRESS", "STATE", "VQ", "VI"])
        for s in r.secondaries {
            t.rows.append(["\(s.controllerID)", s.vfIndex.map(String.init) ?? "-", s.vfAddress?.description ?? "-",
                           s.state, "\(s.queues)", "\(s.interrupts)"])
        }
        return out + t.render(width: terminalWidth())
    }
}

struct NVMePrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Before creating VFs: free the primary controller's flexible resources (resets the PF).",
        discussion: "Does nothing when the primary already holds none. Refused while the PF has VFs."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("PCI address of the NVMe physical function.", valueName: "PF"))
    var pf: String

    @Flag(name: .long, help: "Print the ioctls and sysfs writes without making them.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let a = try parseAddress(pf)
            let actions = try NVMeVFProvisioner(root: sysfs.root, writer: KernelSysfsWriter(root: sysfs.root))
                .prepareForVFs(pf: a, dryRun: dryRun)
            if output.json {
                try printJSON(NVMeChangeInfo(pf: a.description, vfIndex: nil, dryRun: dryRun, changed: !actions.isEmpty,
                                             actions: actions.map(\.description), secondaryController: nil))
                return
            }
            if actions.isEmpty {
                writeStdout("\(a): the primary controller holds no flexible resources; nothing to do\n")
            } else {
                writeStdout(renderActions(actions, pf: a, dryRun: dryRun))
            }
        }
    }
}

struct NVMeProvisionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provision",
        abstract: "Give one VF's secondary controller VQ and VI resources and bring it online.",
        discussion: "Does nothing when it is already online with these resources. The VF must exist and have no driver."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("PCI address of the NVMe physical function.", valueName: "PF"))
    var pf: String

    @Option(name: .long, help: ArgumentHelp("VF index, from 0 (virtfn0).", valueName: "I"))
    var vf: Int

    @Option(name: .long, help: ArgumentHelp("Queue resources (VQ), admin queue included: at least 2.", valueName: "Q"))
    var queues: Int

    @Option(name: .long, help: ArgumentHelp("Interrupt resources (VI, MSI-X vectors): at least 1.", valueName: "N"))
    var interrupts: Int

    @Flag(name: .long, help: "Print the ioctls without making them.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let a = try parseAddress(pf)
            let provisioner = NVMeVFProvisioner(root: sysfs.root, writer: KernelSysfsWriter(root: sysfs.root))
            let actions = try provisioner.provision(pf: a, vfIndex: vf, queues: queues, interrupts: interrupts, dryRun: dryRun)
            let after = try provisioner.status(pf: a).first { $0.vfIndex == vf }
            if output.json {
                try printJSON(NVMeChangeInfo(pf: a.description, vfIndex: vf, dryRun: dryRun, changed: !actions.isEmpty,
                                             actions: actions.map(\.description), secondaryController: after.map(NVMeSecondaryInfo.init)))
                return
            }
            if actions.isEmpty {
                writeStdout("VF \(vf) of \(a): secondary controller \(after.map { "\($0.controllerID)" } ?? "?") is already online with VQ \(queues), VI \(interrupts); nothing to do\n")
            } else {
                writeStdout(renderActions(actions, pf: a, dryRun: dryRun))
                if !dryRun, let s = after {
                    writeStdout("VF \(vf) of \(a): secondary controller \(s.controllerID) \(s.state), VQ \(s.queues), VI \(s.interrupts)\n")
                }
            }
        }
    }
}

private func renderActions(_ actions: [HostAction], pf: PCIAddress, dryRun: Bool) -> String {
    let n = actions.count
    let head = dryRun ? "dry run: \(n) change\(n == 1 ? "" : "s") on \(pf):" : "\(pf): \(n) change\(n == 1 ? "" : "s") made:"
    return head + "\n" + actions.map { "  \($0)\n" }.joined()
}

// MARK: JSON shapes of `passage nvme` (keys in declaration order; absent facts are null)

struct NVMeSecondaryInfo: Encodable {
    var controllerId: Int
    var primaryControllerId: Int
    var vfNumber: Int
    var vfIndex: Int?
    var vfAddress: String?
    var state: String
    var queues: Int
    var interrupts: Int

    init(_ s: NVMeSecondaryController) {
        controllerId = Int(s.controllerID)
        primaryControllerId = Int(s.primaryControllerID)
        vfNumber = Int(s.vfNumber)
        vfIndex = s.vfIndex
        vfAddress = s.vfAddress?.description
        state = s.state
        queues = Int(s.queues)
        interrupts = Int(s.interrupts)
    }

    enum CodingKeys: String, CodingKey {
        case controllerId, primaryControllerId, vfNumber, vfIndex, vfAddress, state, queues, interrupts
    }
}

struct NVMeResourceInfo: Encodable {
    var supported: Bool
    var flexibleTotal: Int
    var allocatedToPrimary: Int
    var assignedToSecondaries: Int
    var free: Int
    var privateTotal: Int
    var secondaryMaximum: Int
    var granularity: Int

    init(_ p: NVMePrimaryControllerCapabilities, _ r: NVMeAdminCommand.Resource) {
        supported = p.supports(r)
        flexibleTotal = p.flexibleTotal(r)
        allocatedToPrimary = p.allocatedToPrimary(r)
        assignedToSecondaries = p.assignedToSecondaries(r)
        free = p.free(r)
        privateTotal = Int(r == .queue ? p.vqPrivateTotal : p.viPrivateTotal)
        secondaryMaximum = p.secondaryMaximum(r)
        granularity = p.granularity(r)
    }
}

struct NVMeStatusInfo: Encodable {
    var pf: String
    var controller: String
    var controllerId: Int
    var model: String
    var serial: String
    var virtualizationManagement: Bool
    var queues: NVMeResourceInfo
    var interrupts: NVMeResourceInfo
    var secondaryControllers: [NVMeSecondaryInfo]

    init(_ r: NVMeVFProvisioner.Report) {
        pf = r.pf.description
        controller = r.controller
        controllerId = Int(r.identity.controllerID)
        model = r.identity.modelNumber
        serial = r.identity.serialNumber
        virtualizationManagement = r.identity.supportsVirtualizationManagement
        queues = NVMeResourceInfo(r.primary, .queue)
        interrupts = NVMeResourceInfo(r.primary, .interrupt)
        secondaryControllers = r.secondaries.map(NVMeSecondaryInfo.init)
    }
}

struct NVMeChangeInfo: Encodable {
    var pf: String
    var vfIndex: Int?
    var dryRun: Bool
    var changed: Bool
    var actions: [String]
    var secondaryController: NVMeSecondaryInfo?

    enum CodingKeys: String, CodingKey { case pf, vfIndex, dryRun, changed, actions, secondaryController }
}
