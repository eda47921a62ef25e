import ArgumentParser
import HostPCI
import PassageAPI
import PassageDaemon

struct Bind: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bind",
        abstract: "Bind a device to a driver (vfio-pci for passthrough) through driver_override.",
        discussion: """
            To vfio-pci, a device's IOMMU group must be viable: every other member unbound, on vfio-pci, \
            on pci-stub, or a bridge. --group binds the whole group (bridges stay). Devices the host uses \
            (a mounted file system, an interface with addresses) are refused without --force. A failure \
            midway puts every device back as it was.
            """
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions
    @OptionGroup var route: RouteOptions

    @Argument(help: ArgumentHelp("PCI addresses of the devices.", valueName: "ADDRESS"))
    var addresses: [String]

    @Option(name: .long, help: ArgumentHelp("Driver to bind to.", valueName: "NAME"))
    var driver: String = "vfio-pci"

    @Flag(name: .long, help: "Bind every function in the device's IOMMU group.")
    var group = false

    @Flag(name: .long, help: "Bind even if the host is using the device.")
    var force = false

    @Flag(name: .long, help: "Print the sysfs writes without making them.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let list = try parseAddresses(addresses)
            if !dryRun, let client = try route.daemonClient(for: sysfs.root) {
                try printBindResult(try bindThroughDaemon(client, list), dryRun: false, json: output.json)
                return
            }
            let binder = PassthroughBinder(root: sysfs.root, writer: KernelSysfsWriter(root: sysfs.root))
            // All or nothing across the devices named, as within one group.
            var changes: [DriverBinder.Change] = []
            do throws(HostPCIError) {
                for a in list where !changes.contains(where: { $0.address == a }) {
                    changes += try binder.bind(a, driver: driver, wholeGroup: group, force: force, dryRun: dryRun)
                }
            } catch {
                guard !dryRun else { throw error }
                var undone: [String] = []
                for c in changes.reversed() where c.changed {
                    binder.binder.rollback(c.address, previousDriver: c.previousDriver, previousOverride: c.previousOverride)
                    undone.append(c.address.description)
                }
                if undone.isEmpty { throw error }
                throw HostPCIError(code: error.code, message: error.message + "; \(undone.joined(separator: ", ")) (bound earlier in this command) put back too", errno: error.errno)
            }
            try printBindResult(BindResultInfo(changes, dryRun: dryRun, binder: binder.binder), dryRun: dryRun, json: output.json)
        }
    }

    /// One request per device; all or nothing as locally: a refusal puts the devices bound
    /// earlier in this command back on their previous drivers.
    func bindThroughDaemon(_ client: DaemonClient, _ list: [PCIAddress]) throws(CLIError) -> BindResultInfo {
        var done: [BindResultInfo.Change] = []
        for a in list where !done.contains(where: { $0.address == a.description }) {
            do throws(CLIError) {
                done += try client.send("POST", "/v1/devices/\(a)/bind", body: BindRequest(driver: driver, group: group, force: force), as: BindResultInfo.self).devices
            } catch {
                var undone: [String] = []
                for d in done.reversed() where d.changed {
                    if (try? client.send("POST", "/v1/devices/\(d.address)/restore", body: RestoreRequest(driver: d.previousDriver ?? "none"), as: BindResultInfo.self)) != nil {
                        undone.append(d.address)
                    }
                }
                if undone.isEmpty { throw error }
                throw CLIError(code: error.code, message: error.message + "; \(undone.joined(separator: ", ")) (bound earlier in this command) put back too", exitCode: error.exitCode)
            }
        }
        return BindResultInfo(dryRun: false, devices: done)
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Give a device back to a host driver and clear its driver_override.",
        discussion: "Without --driver the kernel picks the driver that matches the device (drivers_probe); --driver none leaves it unbound."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions
    @OptionGroup var route: RouteOptions

    @Argument(help: ArgumentHelp("PCI addresses of the devices.", valueName: "ADDRESS"))
    var addresses: [String]

    @Option(name: .long, help: ArgumentHelp("Driver to restore to, or 'none'.", valueName: "NAME"))
    var driver: String?

    @Flag(name: .long, help: "Print the sysfs writes without making them.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let list = try parseAddresses(addresses)
            if !dryRun, let client = try route.daemonClient(for: sysfs.root) {
                var devices: [BindResultInfo.Change] = []
                for a in list {
                    devices += try client.send("POST", "/v1/devices/\(a)/restore", body: RestoreRequest(driver: driver), as: BindResultInfo.self).devices
                }
                try printBindResult(BindResultInfo(dryRun: false, devices: devices), dryRun: false, json: output.json)
                return
            }
            let binder = DriverBinder(root: sysfs.root, writer: KernelSysfsWriter(root: sysfs.root))
            var changes: [DriverBinder.Change] = []
            for a in list {
                switch driver {
                case nil: changes.append(try binder.reprobe(a, dryRun: dryRun))
                case "none": changes.append(try binder.restore(a, to: nil, dryRun: dryRun))
                case let d?: changes.append(try binder.restore(a, to: d, dryRun: dryRun))
                }
            }
            try printBindResult(BindResultInfo(changes, dryRun: dryRun, binder: binder), dryRun: dryRun, json: output.json)
        }
    }
}

func printBindResult(_ info: BindResultInfo, dryRun: Bool, json: Bool) throws {
    if json { try printJSON(info); return }
    var out = ""
    for d in info.devices {
        if !d.changed {
            out += "\(d.address): already on \(d.driver ?? "no driver"), nothing to do\n"
        } else if dryRun {
            out += "\(d.address): would move from \(d.previousDriver ?? "no driver") to \(d.driver ?? "no driver"):\n"
            out += d.actions.map { "  \($0)\n" }.joined()
        } else {
            out += "\(d.address): \(d.previousDriver ?? "no driver") → \(d.driver ?? "no driver")\n"
        }
    }
    writeStdout(out)
}
