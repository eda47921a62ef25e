import HostPCI

/// Per-VF resources that must be set before a VF works (NVMe secondary controllers today).
public protocol VFResourceProvisioner: Sendable {
    /// Before `sriov_numvfs` is written (e.g. free the primary controller's flexible resources).
    func prepare(pf: PCIAddress, dryRun: Bool) throws -> [HostAction]
    /// After the VFs exist, for VF `index`.
    func provision(pf: PCIAddress, vfIndex: Int, dryRun: Bool) throws -> [HostAction]
    /// After a failed creation, once the VF count is back: undoes what `prepare` and `provision`
    /// changed (NVMe: the secondary controllers' resources, and the primary's flexible allocation
    /// with another PF reset). Throws, saying what is left and how to fix it, when it cannot. The
    /// default has nothing to undo.
    func rollBack(pf: PCIAddress) throws
}

extension VFResourceProvisioner {
    public func rollBack(pf: PCIAddress) throws {}
}

/// `passage vf create`: set the VF count, give each VF its resources, bind each to a driver —
/// all or nothing: on failure the VFs already bound are put back and the VF count restored.
public struct VFProvisioning: Sendable {
    public let manager: VFManager
    public let passthrough: PassthroughBinder

    public init(manager: VFManager, passthrough: PassthroughBinder) {
        self.manager = manager
        self.passthrough = passthrough
    }

    public struct Request: Sendable {
        public var pf: PCIAddress
        public var count: Int
        /// Bind every VF to this driver (e.g. vfio-pci); nil leaves them as the kernel puts them.
        public var driver: String?
        /// nil: off when a driver or resources are requested (so no host driver grabs a VF first), else unchanged.
        public var autoprobe: Bool?
        public var resources: (any VFResourceProvisioner)?
        public var force: Bool = false
        public var dryRun: Bool = false

        public init(pf: PCIAddress, count: Int, driver: String? = nil, autoprobe: Bool? = nil,
                    resources: (any VFResourceProvisioner)? = nil, force: Bool = false, dryRun: Bool = false) {
            self.pf = pf
            self.count = count
            self.driver = driver
            self.autoprobe = autoprobe
            self.resources = resources
            self.force = force
            self.dryRun = dryRun
        }
    }

    public struct VFResult: Sendable {
        public var index: Int
        public var address: PCIAddress
        public var driver: String?
        public var iommuGroup: Int?
        public var actions: [HostAction]
    }

    public struct Result: Sendable {
        public var pf: PCIAddress
        public var numVFs: Int
        public var vfs: [VFResult]
        /// Everything done (or, in a dry run, to be done), in order.
        public var actions: [HostAction]
    }

    /// Runs the request; `progress` is called once per VF when it is ready.
    public func create(_ r: Request, progress: (VFResult) -> Void = { _ in }) throws -> Result {
        guard r.count >= 1 else { throw SRIOVError(code: .invalidArgument, message: "--count must be at least 1 (use `passage vf remove \(r.pf)` to remove VFs)") }
        if let d = r.driver { try DriverBinder.checkDriverName(d) }
        let (_, before) = try manager.physicalFunction(r.pf)
        let binder = passthrough.binder
        // The VFs there now, with their drivers: a count change destroys them, so a rollback that
        // re-creates them must also put each back on the driver (and override) it had.
        let previousVFs = before.vfs.map { (address: $0.address, driver: binder.currentDriver($0.address), override: binder.currentOverride($0.address)) }
        let autoprobe = r.autoprobe ?? ((r.driver != nil || r.resources != nil) ? false : nil)
        var actions: [HostAction] = []
        var bound: [DriverBinder.Change] = []
        do {
            if let res = r.resources { actions += try res.prepare(pf: r.pf, dryRun: r.dryRun) }
            actions += try manager.setCount(pf: r.pf, count: r.count, autoprobe: autoprobe, dryRun: r.dryRun)
            let sriov = try manager.physicalFunction(r.pf).sriov
            let addresses: [PCIAddress] = r.dryRun && sriov.numVFs != r.count
                ? (0..<r.count).compactMap { manager.predictedAddress(pf: r.pf, sriov: sriov, index: $0) }
                : sriov.vfs.prefix(r.count).map(\.address)
            var results: [VFResult] = []
            for (i, vf) in addresses.enumerated() {
                var steps: [HostAction] = []
                if let res = r.resources { steps += try res.provision(pf: r.pf, vfIndex: i, dryRun: r.dryRun) }
                if let driver = r.driver {
                    if r.dryRun && sriov.numVFs != r.count {
                        // The VF does not exist yet: the writes a bind will make.
                        steps += [.write(path: manager.root.devicePath(vf) + "/driver_override", value: driver),
                                  .write(path: manager.root.pciBusPath + "/drivers_probe", value: vf.description)]
                    } else {
                        let changes = try passthrough.bind(vf, driver: driver, force: r.force, dryRun: r.dryRun)
                        bound += changes.filter(\.changed)
                        steps += changes.flatMap(\.actions)
                    }
                }
                actions += steps
                let device = try? PCIInventory(root: manager.root, lookUpNames: false).device(vf)
                let result = VFResult(index: i, address: vf, driver: r.dryRun ? r.driver : device?.driver,
                                      iommuGroup: device?.iommuGroup, actions: steps)
                results.append(result)
                progress(result)
            }
            return Result(pf: r.pf, numVFs: r.count, vfs: results, actions: actions)
        } catch {
            guard !r.dryRun else { throw error }
            var notes: [String] = []
            for c in bound.reversed() {
                binder.rollback(c.address, previousDriver: c.previousDriver, previousOverride: c.previousOverride)
            }
            let now = try? manager.physicalFunction(r.pf).sriov
            if now?.numVFs != before.numVFs || now?.driversAutoprobe != before.driversAutoprobe {
                do {
                    try manager.setCount(pf: r.pf, count: before.numVFs, autoprobe: before.driversAutoprobe)
                    notes.append("the VF count of \(r.pf) was put back to \(before.numVFs)")
                } catch {
                    notes.append("putting the VF count of \(r.pf) back to \(before.numVFs) failed too: \(error)")
                }
            }
            if let res = r.resources {
                do { try res.rollBack(pf: r.pf) } catch { notes.append("undoing the resource changes failed too: \(error)") }
            }
            for vf in previousVFs where binder.currentDriver(vf.address) != vf.driver || binder.currentOverride(vf.address) != vf.override {
                do { _ = try binder.restore(vf.address, to: vf.driver, override: vf.override) } catch {
                    notes.append("putting VF \(vf.address) back on \(vf.driver ?? "no driver") failed too: \(error)")
                }
            }
            let message = "\(error)" + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; "))
            if let e = error as? SRIOVError { throw SRIOVError(code: e.code, message: message, errno: e.errno) }
            if let e = error as? HostPCIError { throw HostPCIError(code: e.code, message: message, errno: e.errno) }
            throw error
        }
    }

    /// `passage vf remove`: every VF goes (their drivers let go of them as they disappear).
    public func remove(pf: PCIAddress, dryRun: Bool = false) throws(SRIOVError) -> [HostAction] {
        try manager.setCount(pf: pf, count: 0, dryRun: dryRun)
    }
}
