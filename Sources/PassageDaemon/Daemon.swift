import Foundation
import HostPCI
import Logging
import ServiceLifecycle

/// Everything `passaged` runs, assembled: store, inventory, claims, API, and the services that keep
/// them going. Tests build one over a fixture tree with a simulated kernel.
public final class Daemon: Sendable {
    public let store: Store
    public let events: EventHub
    public let inventory: InventoryCache
    public let claims: ClaimService
    public let api: APIHandler

    public init(stateDirectory: String, root: SysfsRoot, writer: (any SysfsWriter)? = nil, usage: HostUsage? = nil,
                authorizer: Authorizer = Authorizer()) throws {
        store = try Store(directory: stateDirectory)
        events = EventHub()
        inventory = InventoryCache(root: root, events: events)
        claims = ClaimService(store: store, root: root, writer: writer ?? KernelSysfsWriter(root: root), inventory: inventory,
                              events: events, usage: usage)
        api = APIHandler(claims: claims, authorizer: authorizer)
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
        let report = try await daemon.claims.reconcile()
        logger.info("reconciled", metadata: [
            "seconds": "\(String(format: "%.3f", report.seconds))", "rolledBack": "\(report.rolledBack)",
            "finished": "\(report.finished)", "lost": "\(report.lost)",
        ])
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
