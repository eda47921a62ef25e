import ArgumentParser
import Foundation
import HostPCI
import Logging
import PassageDaemon
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

@main
struct Passaged: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passaged",
        abstract: "The Passage daemon: owns the host's assignable PCI devices and serves the API on a Unix socket.",
        discussion: "SIGTERM or SIGINT: graceful shutdown. Under systemd socket activation the passed socket is used instead of --socket.",
        version: APIHandler.version
    )

    @Option(name: .long, help: ArgumentHelp("Unix socket to serve the API on.", valueName: "PATH"))
    var socket: String = "/run/passage/passage.sock"

    @Option(name: .long, help: ArgumentHelp("Directory of the durable state (SQLite).", valueName: "DIR"))
    var stateDir: String = "/var/lib/passage"

    @Option(name: .long, help: ArgumentHelp("Root of the sysfs tree to manage (fixture trees work for everything that needs no kernel reaction).", valueName: "DIR"))
    var sysfsRoot: String = "/sys"

    @Option(name: .long, help: ArgumentHelp("Group whose members may change things (besides root); the socket gets this group.", valueName: "NAME"))
    var group: String = "passage"

    @Option(name: .long, help: ArgumentHelp("Seconds between background rescans of sysfs.", valueName: "S"))
    var rescanInterval: Double = 5

    @Option(name: .long, help: ArgumentHelp("passage-vmm to start VMs with (default: next to passaged).", valueName: "PATH"))
    var vmm: String?

    @Option(name: .long, help: ArgumentHelp("The policy file (a missing file is an empty policy).", valueName: "FILE"))
    var policy: String = Policy.defaultPath

    @Option(name: .long, help: ArgumentHelp("Hot-plug events: auto (udev when systemd-udevd runs, else kernel uevents; off for a fixture --sysfs-root), udev, kernel or off.", valueName: "SOURCE"))
    var hotplug: String = "auto"

    func validate() throws {
        guard ["auto", "udev", "kernel", "off"].contains(hotplug) else {
            throw ValidationError("--hotplug \(hotplug): expected auto, udev, kernel or off")
        }
        guard rescanInterval > 0 else { throw ValidationError("--rescan-interval must be above 0 seconds") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = ProcessInfo.processInfo.environment["PASSAGE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            return h
        }
        let logger = Logger(label: "passaged")
        let root = SysfsRoot(path: sysfsRoot)
        let daemon: Daemon
        do {
            daemon = try Daemon(stateDirectory: stateDir, root: root, authorizer: Authorizer(groupName: group), policyPath: policy, vmmPath: vmm ?? Daemon.defaultVMMPath)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        let server: UnixHTTPServer
        do {
            if let fd = UnixHTTPServer.systemdListenDescriptor() {
                server = UnixHTTPServer(listeningDescriptor: fd, handler: daemon.api, logger: logger)
            } else {
                let dir = (socket as NSString).deletingLastPathComponent
                try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
                let gid = getgrnam(group).map { $0.pointee.gr_gid }
                server = try UnixHTTPServer(socketPath: socket, mode: 0o660, group: gid, handler: daemon.api, logger: logger)
            }
        } catch {
            logger.critical("cannot serve on \(socket): \(error)")
            throw ExitCode(1)
        }
        logger.info("passaged \(APIHandler.version): socket \(server.socketPath ?? "from systemd"), state \(daemon.store.path), sysfs \(root.path)")
        var services: [any Service] = [server, ReconcileService(daemon: daemon, interval: .milliseconds(Int64(rescanInterval * 1000)), logger: logger),
                                        PolicyService(daemon: daemon, logger: logger)]
        let source: UdevMonitor.Source? = switch hotplug {
        case "udev": .udev
        case "kernel": .kernel
        case "off": nil
        default: root.path == "/sys" ? UdevMonitor.Source.automatic : nil
        }
        if let source {
            do {
                services.append(HotplugService(daemon: daemon, monitor: try UdevMonitor(source: source, tag: UdevMonitor.installedTag), logger: logger))
            } catch {
                logger.warning("no hot-plug events (\(error)); devices that come and go are noticed by the rescan every \(rescanInterval) s")
            }
        }
        let group = ServiceGroup(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        try await group.run()
        logger.info("passaged stopped")
    }
}
