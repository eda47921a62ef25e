import CUdev
import Foundation
import HostPCI
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// PCI hot-plug events from the kernel through libudev: a netlink monitor on the `udev` source
/// (events after udev's rules ran) when systemd-udevd runs, else on the raw `kernel` source.
/// Events come in batches: after the first one, more are gathered for `settle` so that 255 VFs
/// appearing at once cost one rescan, not 255.
public final class UdevMonitor: @unchecked Sendable {
    public enum Source: String, Sendable {
        case udev, kernel

        /// `udev` when systemd-udevd is running (its control socket exists), else `kernel`.
        public static var automatic: Source {
            access("/run/udev/control", F_OK) == 0 ? .udev : .kernel
        }
    }

    public struct Event: Sendable, Equatable {
        public var action: String
        public var subsystem: String
        public var sysname: String
        public var devpath: String
        /// The PCI function the event is about, when the device is one.
        public var address: PCIAddress? { subsystem == "pci" ? try? PCIAddress(parsing: sysname) : nil }
    }

    public let source: Source
    /// The udev tag events must carry (udev source with the rules installed), else nil.
    public let tag: String?
    private let udev: OpaquePointer
    private let monitor: OpaquePointer
    private let wake: (read: Int32, write: Int32)

    /// Where Passage's udev rules (which tag PCI events "passage") may be installed.
    public static let rulesPaths = ["/etc/udev/rules.d/70-passage.rules", "/usr/lib/udev/rules.d/70-passage.rules",
                                    "/lib/udev/rules.d/70-passage.rules", "/run/udev/rules.d/70-passage.rules"]
    /// "passage" when the rules are installed: then the udev source delivers only tagged events.
    public static var installedTag: String? {
        rulesPaths.contains { access($0, F_OK) == 0 } ? "passage" : nil
    }

    /// Opens the netlink monitor for `subsystems` (and, on the udev source, events udev tagged
    /// `tag`); throws with the reason when the kernel refuses.
    public init(source: Source = .automatic, subsystems: [String] = ["pci"], tag: String? = nil) throws {
        guard let u = udev_new() else { throw MonitorError("udev_new failed: \(String(cString: strerror(errno)))") }
        guard let m = udev_monitor_new_from_netlink(u, source.rawValue) else {
            udev_unref(u)
            throw MonitorError("cannot open the \(source.rawValue) uevent netlink socket: \(String(cString: strerror(errno)))")
        }
        for s in subsystems { udev_monitor_filter_add_match_subsystem_devtype(m, s, nil) }
        if source == .udev, let tag { udev_monitor_filter_add_match_tag(m, tag) }
        self.tag = source == .udev ? tag : nil
        // Room for a burst (255 VFs appearing produce ~1,000 messages); overflow means a full rescan.
        _ = udev_monitor_set_receive_buffer_size(m, 8 << 20)
        let rc = udev_monitor_enable_receiving(m)
        guard rc >= 0 else {
            udev_monitor_unref(m); udev_unref(u)
            throw MonitorError("cannot listen for uevents: \(String(cString: strerror(-rc)))")
        }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            udev_monitor_unref(m); udev_unref(u)
            throw MonitorError("pipe: \(String(cString: strerror(errno)))")
        }
        for f in fds {
            _ = fcntl(f, F_SETFD, FD_CLOEXEC)
            _ = fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK)
        }
        self.source = source
        udev = u
        monitor = m
        wake = (fds[0], fds[1])
    }

    deinit {
        udev_monitor_unref(monitor)
        udev_unref(udev)
        close(wake.read)
        close(wake.write)
    }

    public struct MonitorError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// Makes `run` return (from any thread).
    public func stop() {
        var b: UInt8 = 1
        _ = write(wake.write, &b, 1)
    }

    /// Blocks, calling `deliver` with each batch of events (and `overflowed` when the kernel dropped
    /// some, so the caller must rescan everything), until `stop()`.
    public func run(settle: Duration = .milliseconds(50), deliver: (_ events: [Event], _ overflowed: Bool) -> Void) {
        let fd = udev_monitor_get_fd(monitor)
        let settleMs = Int32(settle.components.seconds * 1000 + settle.components.attoseconds / 1_000_000_000_000_000)
        while true {
            var batch: [Event] = []
            var overflowed = false
            var timeout: Int32 = -1
            while true {
                var p = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
                let n = poll(&p, 2, timeout)
                if n < 0 && errno == EINTR { continue }
                if p[1].revents != 0 || n < 0 { return }
                if n == 0 { break }  // settled
                errno = 0
                while let dev = udev_monitor_receive_device(monitor) {
                    func text(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
                    batch.append(Event(action: text(udev_device_get_action(dev)), subsystem: text(udev_device_get_subsystem(dev)),
                                       sysname: text(udev_device_get_sysname(dev)), devpath: text(udev_device_get_devpath(dev))))
                    udev_device_unref(dev)
                    errno = 0
                }
                if errno == ENOBUFS { overflowed = true }
                if !batch.isEmpty || overflowed { timeout = settleMs }
            }
            if !batch.isEmpty || overflowed { deliver(batch, overflowed) }
        }
    }
}

/// The daemon's hot-plug service: feeds udev events into the inventory (patching changed
/// functions, rescanning when functions appear or vanish) and marks claims whose devices vanished
/// as lost. Runs its blocking loop on its own thread; ends on graceful shutdown.
public struct HotplugService: Service {
    public let daemon: Daemon
    public let monitor: UdevMonitor
    public let logger: Logger

    public init(daemon: Daemon, monitor: UdevMonitor, logger: Logger) {
        self.daemon = daemon
        self.monitor = monitor
        self.logger = logger
    }

    public func run() async throws {
        let daemon = self.daemon, monitor = self.monitor, logger = self.logger
        let tagNote = monitor.tag.map { " (events tagged \($0) by Passage's udev rules)" } ?? ""
        logger.info("watching PCI hot-plug through the \(monitor.source.rawValue) uevent source\(tagNote)")
        let done = AsyncStream<Void>.makeStream()
        let retries = PolicyRetries()
        Thread.detachNewThread {
            monitor.run { events, overflowed in
                let addresses = events.compactMap(\.address)
                let structural = overflowed || events.contains { $0.action == "add" || $0.action == "remove" }
                logger.debug("uevents", metadata: ["count": "\(events.count)", "overflowed": "\(overflowed)"])
                // One at a time with claims and operations, like every other change to the inventory.
                let group = DispatchGroup()
                group.enter()
                Task.detached {
                    defer { group.leave() }
                    do {
                        try await daemon.claims.applyHotplug(addresses: structural ? nil : addresses)
                    } catch {
                        logger.warning("refreshing after uevents failed: \(error)")
                    }
                }
                group.wait()
                // Hardware that appeared (or a PF whose driver just bound) may be what a policy
                // rule waits for; a step that failed because the device was not ready yet (an NVMe
                // controller still resetting) is tried again — beside the event loop, so the next
                // events (a claim's device vanishing) are not kept waiting behind the retries; a
                // newer batch replaces the retries of an older one.
                let p = daemon.policy.policy
                guard !p.pfs.isEmpty else { return }
                retries.replace(Task.detached {
                    for attempt in 0..<5 {
                        if Task.isCancelled { return }
                        let steps = await daemon.claims.converge(p, state: daemon.policy)
                        guard steps.contains(where: { $0.outcome == "failed" }) else { return }
                        logger.info("a policy step failed; trying again", metadata: ["attempt": "\(attempt + 1)"])
                        do { try await Task.sleep(for: .milliseconds(500 << attempt)) } catch { return }
                    }
                })
            }
            retries.replace(nil)
            done.continuation.finish()
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                for await _ in done.stream {}
            } onGracefulShutdown: {
                monitor.stop()
            }
        } onCancel: {
            monitor.stop()
        }
    }
}

/// The policy convergence started by the latest uevent batch (an older one is cancelled).
final class PolicyRetries: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Task<Void, Never>?

    func replace(_ task: Task<Void, Never>?) {
        lock.lock()
        let old = current
        current = task
        lock.unlock()
        old?.cancel()
    }
}
