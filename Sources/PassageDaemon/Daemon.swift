import Foundation
import HostPCI
import Logging
import ServiceLifecycle
import UnixSignals

/// Everything `passaged` runs, assembled: store, inventory, claims, API, and the services that keep
/// them going. Tests build one over a fixture tree with a simulated kernel.
public final class Daemon: Sendable {
    public let store: Store
    public let events: EventHub
    public let inventory: InventoryCache
    public let claims: ClaimService
    public let api: APIHandler
    public let policy: PolicyState
    public let vms: VMSupervisor

    /// passage-vmm next to the running executable (where install.sh puts both).
    public static var defaultVMMPath: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("passage-vmm").path
    }

    public init(stateDirectory: String, root: SysfsRoot, writer: (any SysfsWriter)? = nil, usage: HostUsage? = nil,
                authorizer: Authorizer = Authorizer(), policyPath: String = Policy.defaultPath, vmmPath: String = Daemon.defaultVMMPath) throws {
        policy = PolicyState(path: policyPath)
        store = try Store(directory: stateDirectory)
        events = EventHub()
        inventory = InventoryCache(root: root, events: events)
        claims = ClaimService(store: store, root: root, writer: writer ?? KernelSysfsWriter(root: root), inventory: inventory,
                              events: events, usage: usage)
        vms = VMSupervisor(vmmPath: vmmPath, stateDirectory: stateDirectory, claims: claims)
        vms.adopt()
        api = APIHandler(claims: claims, authorizer: authorizer, policy: policy, vms: vms)
    }
}

/// Start-up reconciliation, then a periodic rescan of sysfs (devices that come and go between
/// udev-driven refreshes are noticed within `interval`). Ends on graceful shutdown.
public struct ReconcileService: Service {
    public let daemon: Daemon
    public let interval: Duration
    public let logger: Logger

    public init(daemon: Daemon, interval: Duration = .seconds(5), logger: Logger) {
        self.daemon = daemon
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        KernelSysfsWriter.suspendInjectedDelay(true)
        let report: ClaimService.ReconcileReport
        let logger = logger
        do {
            report = try await daemon.claims.reconcile(serving: { n in
                logger.info("serving", metadata: ["unfinished": "\(n)"])
            })
        } catch {
            KernelSysfsWriter.suspendInjectedDelay(false)
            throw error
        }
        KernelSysfsWriter.suspendInjectedDelay(false)
        logger.info("reconciled", metadata: [
            "seconds": "\(String(format: "%.3f", report.seconds))", "rolledBack": "\(report.rolledBack)",
            "finished": "\(report.finished)", "lost": "\(report.lost)",
        ].merging(report.notes.isEmpty ? [:] : ["notes": "\(report.notes)"]) { a, _ in a })
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                try? await daemon.claims.applyHotplug(addresses: nil)
            }
        }
        daemon.events.finishAll()
    }
}

/// The policy file: loaded and applied once start-up reconciliation is done, again on SIGHUP
/// (a file that does not parse keeps the previous policy in force).
public struct PolicyService: Service {
    public let daemon: Daemon
    public let logger: Logger

    public init(daemon: Daemon, logger: Logger) {
        self.daemon = daemon
        self.logger = logger
    }

    public func run() async throws {
        while !daemon.claims.ready {
            try? await Task.sleep(for: .milliseconds(20))
            if Task.isCancelled { return }
        }
        await apply(reason: "start-up")
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in hangups {
                await apply(reason: "SIGHUP")
            }
        }
    }

    func apply(reason: String) async {
        do {
            let p = try daemon.claims.reloadPolicy(daemon.policy)
            let steps = await daemon.claims.converge(p, state: daemon.policy)
            let changed = steps.filter { $0.outcome == "done" }.count
            let failed = steps.filter { $0.outcome == "failed" }.count
            logger.info("policy applied (\(reason))", metadata: ["file": "\(p.file)", "rules": "\(p.pfs.count)", "changed": "\(changed)", "failed": "\(failed)"])
        } catch {
            logger.error("policy not loaded (\(reason)): \(error)")
        }
    }
}
