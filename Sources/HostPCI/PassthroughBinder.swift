/// Binds functions for passthrough with IOMMU-group safety: a function goes to vfio-pci only when
/// every other member of its group is already safe to leave (unbound, on vfio-pci, on pci-stub,
/// or a bridge on pcieport), or when the whole group is bound together (`wholeGroup`). Functions
/// the host is using (mounted file systems, interfaces with addresses) are refused unless forced.
public struct PassthroughBinder: Sendable {
    public let binder: DriverBinder
    public let usage: HostUsage
    public var root: SysfsRoot { binder.root }

    public init(binder: DriverBinder, usage: HostUsage) {
        self.binder = binder
        self.usage = usage
    }

    public init(root: SysfsRoot, writer: any SysfsWriter) {
        self.init(binder: DriverBinder(root: root, writer: writer), usage: HostUsage(root: root))
    }

    /// The functions a bind of `a` to `driver` would change, after every safety check.
    /// Binding to a driver that does its own DMA (a host driver) needs no group checks.
    public func targets(_ a: PCIAddress, driver: String, wholeGroup: Bool, force: Bool) throws(HostPCIError) -> [PCIDevice] {
        let inventory = PCIInventory(root: root, lookUpNames: false)
        let device = try inventory.device(a)
        let userDMA = IOMMUGroup.allowsUserDMA(driver: driver, isBridge: false)
        var targets = [device]
        if device.isBridge && userDMA {
            throw HostPCIError(code: .invalidArgument,
                               message: "\(a) is a PCI bridge; bridges stay with the host (pcieport). Bind the devices behind it instead")
        }
        if userDMA {
            guard let group = device.iommuGroup else {
                throw HostPCIError(code: .groupNotViable,
                                   message: "\(a) has no IOMMU group, so \(driver) cannot give it to a guest safely; turn the IOMMU on (VT-d/AMD-Vi in firmware, intel_iommu=on or amd_iommu=on on the kernel command line)")
            }
            let members = try (inventory.groupMembers(group) ?? [a]).map { (m) throws(HostPCIError) in m == a ? device : try inventory.device(m) }
            let others = members.filter { $0.address != a }
            if wholeGroup {
                targets = [device] + others.filter { !$0.isBridge }
            } else {
                let blockers = others.filter { d in d.driver.map { !IOMMUGroup.allowsUserDMA(driver: $0, isBridge: d.isBridge) } ?? false }
                if !blockers.isEmpty {
                    let list = blockers.map { "\($0.address) (on \($0.driver!))" }.joined(separator: ", ")
                    throw HostPCIError(code: .groupNotViable,
                                       message: "IOMMU group \(group) of \(a) is not viable: \(list) \(blockers.count == 1 ? "is" : "are") still with host drivers; bind the whole group with --group, or move \(blockers.count == 1 ? "it" : "them") off those drivers first")
                }
            }
        }
        if !force {
            for t in targets where t.driver != driver {
                let uses = usage.uses(of: t.address)
                if !uses.isEmpty {
                    throw HostPCIError(code: .deviceInUse,
                                       message: "\(t.address) is in use by the host: \(uses.joined(separator: "; ")); taking it from \(t.driver ?? "its driver") would take that away too. Stop using it first, or pass --force")
                }
            }
        }
        return targets
    }

    /// Binds `a` (and with `wholeGroup` the rest of its group) to `driver`. All or nothing: when one
    /// member fails, the members already moved are put back.
    public func bind(_ a: PCIAddress, driver: String = "vfio-pci", wholeGroup: Bool = false, force: Bool = false,
                     dryRun: Bool = false) throws(HostPCIError) -> [DriverBinder.Change] {
        try DriverBinder.checkDriverName(driver)
        let targets = try targets(a, driver: driver, wholeGroup: wholeGroup, force: force)
        var changes: [DriverBinder.Change] = []
        for t in targets {
            do {
                changes.append(try binder.bind(t.address, to: driver, dryRun: dryRun))
            } catch {
                var undone: [String] = []
                for c in changes.reversed() where c.changed {
                    binder.rollback(c.address, previousDriver: c.previousDriver, previousOverride: c.previousOverride)
                    undone.append(c.address.description)
                }
                let note = undone.isEmpty ? "" : "; \(undone.joined(separator: ", ")) \(undone.count == 1 ? "was" : "were") put back too"
                throw HostPCIError(code: error.code, message: error.message + note, errno: error.errno)
            }
        }
        return changes
    }
}
