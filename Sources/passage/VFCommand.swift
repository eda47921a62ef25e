import ArgumentParser
import HostPCI
import PassageAPI
import PassageDaemon
import SRIOV

struct VF: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vf",
        abstract: "Create, remove and configure a PF's SR-IOV virtual functions.",
        subcommands: [VFCreate.self, VFRemove.self, VFSet.self, VFLinks.self]
    )
}

struct VFCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create N VFs on a PF, give NVMe VFs their controller resources, and bind them.",
        discussion: """
            Changing an existing count goes through 0 (the kernel refuses N → M). With --driver or NVMe \
            resources, sriov_drivers_autoprobe is turned off first so no host driver grabs a VF. \
            All or nothing: on failure the bound VFs are put back and the VF count restored.
            """
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions
    @OptionGroup var route: RouteOptions

    @Argument(help: ArgumentHelp("PCI address of the physical function.", valueName: "PF"))
    var pf: String

    @Option(name: .long, help: "Number of VFs.")
    var count: Int

    @Option(name: .long, help: ArgumentHelp("Bind every VF to this driver (e.g. vfio-pci).", valueName: "NAME"))
    var driver: String?

    @Option(name: .long, help: ArgumentHelp("Set sriov_drivers_autoprobe: on or off.", valueName: "on|off"))
    var autoprobe: String?

    @Option(name: .long, help: ArgumentHelp("NVMe: I/O + admin queues for each VF's secondary controller.", valueName: "Q"))
    var nvmeQueues: Int?

    @Option(name: .long, help: ArgumentHelp("NVMe: interrupt vectors for each VF's secondary controller.", valueName: "I"))
    var nvmeInterrupts: Int?

    @Flag(name: .long, help: "Bind even if the host is using a VF.")
    var force = false

    @Flag(name: .long, help: "Print the sysfs writes and ioctls without making them.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let a = try parseAddress(pf)
            var probe: Bool?
            switch autoprobe {
            case nil: probe = nil
            case "on": probe = true
            case "off": probe = false
            case let other?: throw CLIError.usage("--autoprobe \(other): expected on or off")
            }
            if (nvmeQueues == nil) != (nvmeInterrupts == nil) {
                throw CLIError.usage("--nvme-queues and --nvme-interrupts go together")
            }
            if !dryRun, let client = try route.daemonClient(for: sysfs.root) {
                guard count >= 1 else { throw CLIError.usage("--count must be at least 1 (use `passage vf remove \(a)` to remove VFs)") }
                let request = VFCreateRequest(count: count, driver: driver, autoprobe: probe, nvmeQueues: nvmeQueues,
                                              nvmeInterrupts: nvmeInterrupts, force: force ? true : nil)
                let started = try client.send("POST", "/v1/pfs/\(a)/vfs", body: request, as: OperationInfo.self)
                let json = output.json
                let op = try client.follow(started) { line in if !json { writeStdout(line + "\n") } }
                guard let info = op.result else { throw CLIError(code: "bad-response", message: "operation \(op.id) ended without a result", exitCode: 1) }
                if json { try printJSON(info) } else { writeStdout("\(a): \(info.numVFs) VF\(info.numVFs == 1 ? "" : "s") ready (operation \(op.id))\n") }
                return
            }
            let root = sysfs.root
            let writer = KernelSysfsWriter(root: root)
            let provisioning = VFProvisioning(manager: VFManager(root: root, writer: writer),
                                              passthrough: PassthroughBinder(root: root, writer: writer))
            var resources: (any VFResourceProvisioner)?
            if let q = nvmeQueues, let i = nvmeInterrupts {
                resources = try nvmeResources(root: root, writer: writer, queues: q, interrupts: i)
            }
            let request = VFProvisioning.Request(pf: a, count: count, driver: driver, autoprobe: probe,
                                                 resources: resources, force: force, dryRun: dryRun)
            let json = output.json
            let result = try provisioning.create(request) { vf in
                guard !json else { return }
                var line = "VF \(vf.index) \(vf.address)"
                if dryRun { line += ": would make \(vf.actions.count) change\(vf.actions.count == 1 ? "" : "s")" }
                else { line += ": ready" + (vf.driver.map { " on \($0)" } ?? ", no driver") + (vf.iommuGroup.map { ", IOMMU group \($0)" } ?? "") }
                writeStdout(line + "\n")
            }
            let info = VFOperationInfo(result, dryRun: dryRun)
            if json { try printJSON(info); return }
            if dryRun {
                writeStdout("dry run: \(info.actions.count) change\(info.actions.count == 1 ? "" : "s") on \(a):\n" + info.actions.map { "  \($0)\n" }.joined())
            } else {
                writeStdout("\(a): \(result.numVFs) VF\(result.numVFs == 1 ? "" : "s") ready\n")
            }
        }
    }
}

struct VFRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove every VF of a PF (sriov_numvfs = 0)."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions
    @OptionGroup var route: RouteOptions

    @Argument(help: ArgumentHelp("PCI address of the physical function.", valueName: "PF"))
    var pf: String

    @Flag(name: .long, help: "Print the sysfs writes without making them.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let a = try parseAddress(pf)
            if !dryRun, let client = try route.daemonClient(for: sysfs.root) {
                let started = try client.delete("/v1/pfs/\(a)/vfs", as: OperationInfo.self)
                let op = try client.follow(started) { _ in }
                guard let info = op.result else { throw CLIError(code: "bad-response", message: "operation \(op.id) ended without a result", exitCode: 1) }
                if output.json { try printJSON(info) } else { writeStdout(info.actions.isEmpty ? "\(a): has no VFs, nothing to do\n" : "\(a): VFs removed (operation \(op.id))\n") }
                return
            }
            let root = sysfs.root
            let writer = KernelSysfsWriter(root: root)
            let provisioning = VFProvisioning(manager: VFManager(root: root, writer: writer),
                                              passthrough: PassthroughBinder(root: root, writer: writer))
            let actions = try provisioning.remove(pf: a, dryRun: dryRun)
            let info = VFOperationInfo(pf: a.description, dryRun: dryRun, numVFs: 0, vfs: [], actions: actions.map(\.description))
            if output.json { try printJSON(info); return }
            if actions.isEmpty { writeStdout("\(a): has no VFs, nothing to do\n") }
            else if dryRun { writeStdout(actions.map { "\($0)\n" }.joined()) }
            else { writeStdout("\(a): VFs removed\n") }
        }
    }
}
