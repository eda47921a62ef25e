#if canImport(Glibc)
import Glibc
#endif

/// Binds PCI functions to drivers the way the kernel intends: `driver_override` then
/// `drivers_probe` (never `new_id`), after unbinding from the current driver. Every multi-step
/// change undoes what it did when a later step fails, so no device is left unbound by a failed call.
public struct DriverBinder: Sendable {
    public let root: SysfsRoot
    public let writer: any SysfsWriter
    /// How long to wait for the kernel to finish a bind.
    public var bindTimeout: Double = 5

    public init(root: SysfsRoot, writer: any SysfsWriter) {
        self.root = root
        self.writer = writer
    }

    /// What one binding changed, so that it can be undone or reported.
    public struct Change: Sendable, Hashable {
        public var address: PCIAddress
        /// The driver bound before (nil: none).
        public var previousDriver: String?
        /// `driver_override` before (nil: unset).
        public var previousOverride: String?
        public var newDriver: String
        /// The sysfs writes made (or, in a dry run, that would be made).
        public var actions: [HostAction]
        /// False when the device was already bound to the driver: nothing was done.
        public var changed: Bool { !actions.isEmpty }
    }

    // MARK: paths

    func attribute(_ a: PCIAddress, _ name: String) -> String { root.devicePath(a) + "/" + name }
    var driversProbe: String { root.pciBusPath + "/drivers_probe" }
    func driverPath(_ driver: String) -> String { root.pciBusPath + "/drivers/" + driver }

    public func currentDriver(_ a: PCIAddress) -> String? {
        SysfsDirectory(root.devicePath(a))?.readLinkName("driver")
    }

    /// `driver_override`, reading both the empty and the `(null)` forms as unset.
    public func currentOverride(_ a: PCIAddress) -> String? {
        guard let s = SysfsDirectory(root.devicePath(a))?.readString("driver_override"), !s.isEmpty, s != "(null)" else { return nil }
        return s
    }

    public func driverExists(_ driver: String) -> Bool {
        SysfsDirectory(driverPath(driver)) != nil
    }

    // MARK: bind

    /// Binds one function to `driver`. Already bound to it: nothing happens. On failure the
    /// function is put back on its previous driver with its previous `driver_override`.
    public func bind(_ a: PCIAddress, to driver: String, dryRun: Bool = false) throws(HostPCIError) -> Change {
        try Self.checkDriverName(driver)
        guard SysfsDirectory(root.devicePath(a)) != nil else { throw .deviceNotFound(a, root: root) }
        let previous = currentDriver(a)
        let previousOverride = currentOverride(a)
        var change = Change(address: a, previousDriver: previous, previousOverride: previousOverride, newDriver: driver, actions: [])
        if previous == driver { return change }
        guard driverExists(driver) else {
            throw HostPCIError(code: .driverNotFound,
                               message: "cannot bind \(a) to \(driver): no such driver is loaded (\(driverPath(driver)) is missing); load it with `modprobe \(driver)`")
        }
        var plan: [HostAction] = [.write(path: attribute(a, "driver_override"), value: driver)]
        if let previous { plan.append(.write(path: driverPath(previous) + "/unbind", value: a.description)) }
        plan.append(.write(path: driversProbe, value: a.description))
        plan.append(.wait("\(a) to bind to \(driver)"))
        change.actions = plan
        if dryRun { return change }

        var done: [HostAction] = []
        do {
            for step in plan {
                switch step {
                case let .write(path, value): try writer.write(value, to: path)
                case .wait: try waitForDriver(a, driver)
                default: break
                }
                done.append(step)
            }
        } catch {
            let undo = rollback(a, previousDriver: previous, previousOverride: previousOverride)
            throw HostPCIError(code: error.code, message: "binding \(a) to \(driver) failed: \(error.message)" + undo, errno: error.errno)
        }
        return change
    }

    /// Puts a function back: binds `driver` (nil: leaves it unbound) and leaves `driver_override`
    /// as `override` (nil: cleared). Already in that state: nothing happens.
    ///
    /// The bind goes through `driver_override = driver`: a VF whose PF has
    /// `sriov_drivers_autoprobe` off can only be probed by a driver its override names (the
    /// kernel's `pci_device_can_probe`), so clearing the override first would make the bind fail
    /// with ENODEV.
    public func restore(_ a: PCIAddress, to driver: String?, override: String? = nil, dryRun: Bool = false) throws(HostPCIError) -> Change {
        if let driver { try Self.checkDriverName(driver) }
        guard SysfsDirectory(root.devicePath(a)) != nil else { throw .deviceNotFound(a, root: root) }
        let previous = currentDriver(a)
        let previousOverride = currentOverride(a)
        var change = Change(address: a, previousDriver: previous, previousOverride: previousOverride, newDriver: driver ?? "none", actions: [])
        var plan: [HostAction] = []
        if previous != nil && previous != driver { plan.append(.write(path: driverPath(previous!) + "/unbind", value: a.description)) }
        var overrideNow = previousOverride
        if let driver, previous != driver {
            guard driverExists(driver) else {
                throw HostPCIError(code: .driverNotFound,
                                   message: "cannot restore \(a) to \(driver): no such driver is loaded; load it with `modprobe \(driver)` and run the restore again")
            }
            if overrideNow != driver {
                plan.append(.write(path: attribute(a, "driver_override"), value: driver))
                overrideNow = driver
            }
            plan.append(.write(path: driverPath(driver) + "/bind", value: a.description))
            plan.append(.wait("\(a) to bind to \(driver)"))
        }
        if overrideNow != override { plan.append(.write(path: attribute(a, "driver_override"), value: override ?? "\n")) }
        change.actions = plan
        if dryRun || plan.isEmpty { return change }
        do {
            for step in plan {
                switch step {
                case let .write(path, value): try writer.write(value, to: path)
                case .wait: try waitForDriver(a, driver!)
                default: break
                }
            }
        } catch {
            let undo = rollback(a, previousDriver: previous, previousOverride: previousOverride)
            throw HostPCIError(code: error.code, message: "restoring \(a) to \(driver ?? "no driver") failed: \(error.message)" + undo, errno: error.errno)
        }
        return change
    }

    /// Gives a function back to the kernel's choice: unbinds it, clears `driver_override` and asks
    /// `drivers_probe` for the driver that matches it (usually the one it had before Passage took it).
    /// It may end up with no driver when none matches.
    public func reprobe(_ a: PCIAddress, dryRun: Bool = false) throws(HostPCIError) -> Change {
        guard SysfsDirectory(root.devicePath(a)) != nil else { throw .deviceNotFound(a, root: root) }
        let previous = currentDriver(a)
        let previousOverride = currentOverride(a)
        var change = Change(address: a, previousDriver: previous, previousOverride: previousOverride, newDriver: "(kernel's choice)", actions: [])
        if previousOverride == nil && previous != nil { return change }  // already on a driver of the kernel's choosing
        var plan: [HostAction] = []
        if let previous { plan.append(.write(path: driverPath(previous) + "/unbind", value: a.description)) }
        if previousOverride != nil { plan.append(.write(path: attribute(a, "driver_override"), value: "\n")) }
        plan.append(.write(path: driversProbe, value: a.description))
        change.actions = plan
        if dryRun { return change }
        do {
            for case let .write(path, value) in plan { try writer.write(value, to: path) }
        } catch {
            let undo = rollback(a, previousDriver: previous, previousOverride: previousOverride)
            throw HostPCIError(code: error.code, message: "giving \(a) back to the kernel failed: \(error.message)" + undo, errno: error.errno)
        }
        change.newDriver = currentDriver(a) ?? "none"
        return change
    }

    /// Best effort: back to `previousDriver` with `previousOverride`. Returns a sentence for the error message.
    @discardableResult
    public func rollback(_ a: PCIAddress, previousDriver: String?, previousOverride: String?) -> String {
        var problems: [String] = []
        let now = currentDriver(a)
        if now != previousDriver, let now {
            do { try writer.write(a.description, to: driverPath(now) + "/unbind") } catch { problems.append(error.message) }
        }
        if currentOverride(a) != previousOverride {
            do { try writer.write(previousOverride ?? "\n", to: attribute(a, "driver_override")) } catch { problems.append(error.message) }
        }
        if let previousDriver, currentDriver(a) != previousDriver {
            do {
                try writer.write(a.description, to: driverPath(previousDriver) + "/bind")
                try waitForDriver(a, previousDriver)
            } catch { problems.append(error.message) }
        }
        if problems.isEmpty {
            return "; \(a) was put back on \(previousDriver ?? "no driver")"
        }
        return "; putting \(a) back on \(previousDriver ?? "no driver") also failed: " + problems.joined(separator: "; ")
            + " — check `passage devices show \(a)`"
    }

    func waitForDriver(_ a: PCIAddress, _ driver: String) throws(HostPCIError) {
        let deadline = monotonicSeconds() + bindTimeout
        while true {
            let now = currentDriver(a)
            if now == driver { return }
            if monotonicSeconds() > deadline {
                throw HostPCIError(code: .bindFailed,
                                   message: "\(a) is on \(now ?? "no driver") \(bindTimeout) s after asking for \(driver); the driver refused the device (see `dmesg`)")
            }
            usleep(2_000)
        }
    }

    /// Driver names come from the user: they become path components, so they must be plain names.
    public static func checkDriverName(_ d: String) throws(HostPCIError) {
        let ok = !d.isEmpty && d.count <= 64 && d != "." && d != ".."
            && d.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d || $0 == 0x5f }
        guard ok else {
            throw HostPCIError(code: .invalidArgument, message: "invalid driver name \(HostPCIError.quoted(d)): use letters, digits, '-' and '_' (e.g. vfio-pci)")
        }
    }
}

/// Seconds on the monotonic clock, for deadlines.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
