import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// Long operations (VF creation and removal): started by a request that returns at once with an
/// operation resource, run on the change queue, their progress kept here and published as events.
public final class OperationRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var operations: [String: OperationInfo] = [:]
    private var order: [String] = []
    let events: EventHub

    init(events: EventHub) { self.events = events }

    func start(kind: String, target: String) -> String {
        let id = randomID("op-")
        lock.withLock {
            operations[id] = OperationInfo(id: id, kind: kind, state: "running", target: target, progress: [], error: nil, result: nil)
            order.append(id)
            if order.count > 500 { operations[order.removeFirst()] = nil }
        }
        events.publish("operation-progress", address: target, operationId: id, message: "\(kind) on \(target) started")
        return id
    }

    func progress(_ id: String, _ line: String) {
        let target = lock.withLock { () -> String? in
            operations[id]?.progress.append(line)
            return operations[id]?.target
        }
        events.publish("operation-progress", address: target, operationId: id, message: line)
    }

    func finish(_ id: String, result: VFOperationInfo?, error: APIError?) {
        let target = lock.withLock { () -> String? in
            operations[id]?.state = error == nil ? "succeeded" : "failed"
            operations[id]?.result = result
            operations[id]?.error = error?.info
            return operations[id]?.target
        }
        events.publish("operation-finished", address: target, operationId: id,
                       message: error.map { "failed: \($0.message)" } ?? "succeeded")
    }

    public func get(_ id: String) -> OperationInfo? { lock.withLock { operations[id] } }
    public func all() -> [OperationInfo] { lock.withLock { order.compactMap { operations[$0] } } }
}

extension ClaimService {
    /// Starts `vf create` as an operation; returns its id at once.
    func startVFCreate(pf: PCIAddress, request r: VFCreateRequest, operations: OperationRegistry) -> String {
        let id = operations.start(kind: "vf-create", target: pf.description)
        Task {
            do {
                let result = try await serialized { () throws -> VFOperationInfo in
                    try self.createVFsNow(pf: pf, request: r) { vf in
                        operations.progress(id, "VF \(vf.index) \(vf.address) ready" + (vf.driver.map { " on \($0)" } ?? ""))
                    }
                }
                operations.finish(id, result: result, error: nil)
            } catch {
                operations.finish(id, result: nil, error: APIError(error))  // createVFsNow refreshed the inventory
            }
        }
        return id
    }

    /// Creates VFs under an intent that records the count to go back to (the caller serializes).
    func createVFsNow(pf: PCIAddress, request r: VFCreateRequest, progress: (VFProvisioning.VFResult) -> Void) throws -> VFOperationInfo {
        // What to go back to if passaged dies midway (start-up reconciliation reads it).
        let before = try VFManager(root: root, writer: writer).physicalFunction(pf).sriov
        let payload = VFIntent(pf: pf, count: r.count, previousCount: before.numVFs, previousAutoprobe: before.driversAutoprobe)
        let intent = try store.beginIntent(kind: "vf-create", payload: payload.text, now: Self.now())
        defer { try? store.endIntent(intent, state: "done", now: Self.now()) }
        let provisioning = VFProvisioning(manager: VFManager(root: root, writer: writer),
                                          passthrough: passthrough)
        var resources: (any VFResourceProvisioner)?
        if let q = r.nvmeQueues, let i = r.nvmeInterrupts {
            // The NVMe state to go back to is added to the intent before it changes: the secondary
            // controllers as found, then what freeing the primary's resources takes from it.
            let store = self.store
            resources = NVMeVFResources(provisioner: NVMeVFProvisioner(root: root, writer: writer), queues: q, interrupts: i) { secondaries, preparation in
                var recorded = payload
                recorded.nvmeSecondaries = secondaries
                recorded.nvmePreparation = preparation
                try store.updateIntentPayload(intent, payload: recorded.text)
            }
        } else if (r.nvmeQueues == nil) != (r.nvmeInterrupts == nil) {
            throw APIError.badRequest("nvmeQueues and nvmeInterrupts go together")
        }
        do {
            let result = try provisioning.create(.init(pf: pf, count: r.count, driver: r.driver, autoprobe: r.autoprobe, resources: resources, force: r.force ?? false), progress: progress)
            _ = try? inventory.refresh()
            return VFOperationInfo(result)
        } catch {
            _ = try? inventory.refresh()
            throw error
        }
    }

    func startVFRemove(pf: PCIAddress, operations: OperationRegistry) -> String {
        let id = operations.start(kind: "vf-remove", target: pf.description)
        Task {
            do {
                let result = try await serialized { () throws -> VFOperationInfo in try self.removeVFsNow(pf: pf) }
                operations.finish(id, result: result, error: nil)
            } catch {
                operations.finish(id, result: nil, error: APIError(error))
            }
        }
        return id
    }

    /// Removes every VF of `pf` under an intent, refusing while a claim holds one (the caller serializes).
    func removeVFsNow(pf: PCIAddress) throws -> VFOperationInfo {
        let holds = try groupHolds()
        let vfs = (try? VFManager(root: root, writer: writer).physicalFunction(pf).sriov.vfs) ?? []
        let snapshot = try inventory.current()
        for vf in vfs {
            if let g = snapshot.device(vf.address)?.iommuGroup, let holder = holds[g] {
                throw APIError(409, "vfs-in-use", "VF \(vf.address) of \(pf) is held by claim \(holder); release it before removing the VFs")
            }
        }
        let intent = try store.beginIntent(kind: "vf-remove", payload: VFIntent(pf: pf, count: 0, previousCount: vfs.count, previousAutoprobe: nil).text, now: Self.now())
        defer { try? store.endIntent(intent, state: "done", now: Self.now()) }
        let actions = try VFManager(root: root, writer: writer).setCount(pf: pf, count: 0)
        _ = try? inventory.refresh()
        return VFOperationInfo(pf: pf.description, dryRun: false, numVFs: 0, vfs: [], actions: actions.map(\.description))
    }
}

/// The payload of a `vf-create` / `vf-remove` intent:
/// `PF COUNT previous=N [autoprobe=0|1] [nvme-secondaries=ID:ON:VQ:VI,…] [nvme-primary=CNTLID:VQ:VI]`
/// — with NVMe provisioning, the secondary controllers as the creation found them and, once it is
/// about to free the primary controller's flexible resources, what the primary held (`-` for a
/// resource type it held none of), so that start-up can put all of it back.
struct VFIntent: Equatable {
    var pf: PCIAddress
    var count: Int
    var previousCount: Int
    var previousAutoprobe: Bool?
    var nvmeSecondaries: [NVMeSecondaryController]?
    var nvmePreparation: NVMeVFProvisioner.Preparation?

    var text: String {
        var t = "\(pf) \(count) previous=\(previousCount)" + (previousAutoprobe.map { " autoprobe=\($0 ? 1 : 0)" } ?? "")
        if let s = nvmeSecondaries {
            t += " nvme-secondaries=" + s.map { "\($0.controllerID):\($0.isOnline ? 1 : 0):\($0.queues):\($0.interrupts)" }.joined(separator: ",")
        }
        if let p = nvmePreparation {
            t += " nvme-primary=\(p.controllerID):" + [NVMeAdminCommand.Resource.queue, .interrupt].map { p.previous[$0].map(String.init) ?? "-" }.joined(separator: ":")
        }
        return t
    }

    init(pf: PCIAddress, count: Int, previousCount: Int, previousAutoprobe: Bool?,
         nvmeSecondaries: [NVMeSecondaryController]? = nil, nvmePreparation: NVMeVFProvisioner.Preparation? = nil) {
        self.pf = pf
        self.count = count
        self.previousCount = previousCount
        self.previousAutoprobe = previousAutoprobe
        self.nvmeSecondaries = nvmeSecondaries
        self.nvmePreparation = nvmePreparation
    }

    /// Puts the NVMe controllers back as the creation found them (its VFs already gone): the
    /// secondaries and, if it freed them, the primary's flexible resources (an allocation and a PF
    /// reset). Nil when the creation recorded no NVMe state.
    func undoNVMe(_ nvme: NVMeVFProvisioner) throws -> String? {
        if let prep = nvmePreparation {
            try nvme.undoPreparation(prep, secondaries: nvmeSecondaries)
            return "NVMe primary given back " + NVMeAdminCommand.Resource.allCases.compactMap { r in prep.previous[r].map { "\($0) \(r.abbreviation)" } }
                .joined(separator: " and ") + ", secondaries as before"
        }
        if let s = nvmeSecondaries {
            try nvme.restore(pf: pf, secondaries: s)
            return "NVMe secondaries as before"
        }
        return nil
    }

    /// Nil for a payload this version did not write (older intents name only the PF and count).
    init?(parsing text: String) {
        let f = text.split(separator: " ").map(String.init)
        guard f.count >= 3, let pf = try? PCIAddress(parsing: f[0]), let count = Int(f[1]),
              f[2].hasPrefix("previous="), let previous = Int(f[2].dropFirst(9)) else { return nil }
        self.init(pf: pf, count: count, previousCount: previous, previousAutoprobe: nil)
        for field in f.dropFirst(3) {
            let kv = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard kv.count == 2 else { return nil }
            switch kv[0] {
            case "autoprobe":
                guard kv[1] == "0" || kv[1] == "1" else { return nil }
                previousAutoprobe = kv[1] == "1"
            case "nvme-secondaries":
                var list: [NVMeSecondaryController] = []
                for item in kv[1].split(separator: ",") {
                    let n = item.split(separator: ":").map { UInt16($0) }
                    guard n.count == 4, let id = n[0], let on = n[1], on <= 1, let vq = n[2], let vi = n[3] else { return nil }
                    list.append(NVMeSecondaryController(controllerID: id, primaryControllerID: 0, isOnline: on == 1, vfNumber: 0, queues: vq, interrupts: vi))
                }
                nvmeSecondaries = list
            case "nvme-primary":
                let n = kv[1].split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                guard n.count == 3, let id = UInt16(n[0]) else { return nil }
                var held: [NVMeAdminCommand.Resource: Int] = [:]
                for (r, v) in zip([NVMeAdminCommand.Resource.queue, .interrupt], n[1...]) where v != "-" {
                    guard let x = Int(v), x >= 0 else { return nil }
                    held[r] = x
                }
                nvmePreparation = NVMeVFProvisioner.Preparation(pf: pf, controllerID: id, previous: held)
            default: return nil
            }
        }
    }
}

extension ClaimService {
    /// Start-up: a VF creation cut short goes back to the VF count (and autoprobe) the PF had
    /// before; a removal cut short is finished. VFs created by the cut-short operation were never
    /// claimed (operations and claims run one at a time), so removing them takes nothing from anyone.
    func recoverVFIntent(kind: String, payload: String) -> (state: String, note: String) {
        guard let p = VFIntent(parsing: payload) else { return ("abandoned", "unreadable payload '\(payload)'") }
        let manager = VFManager(root: root, writer: writer)
        let target = kind == "vf-remove" ? 0 : p.previousCount
        let state = kind == "vf-remove" ? "done" : "rolled-back"
        var notes: [String] = []
        do {
            let now = try manager.physicalFunction(p.pf).sriov
            if now.numVFs == target && (kind == "vf-remove" || p.previousAutoprobe == nil || now.driversAutoprobe == p.previousAutoprobe) {
                notes.append("\(p.pf) already has \(target) VFs")
            } else {
                try manager.setCount(pf: p.pf, count: target, autoprobe: kind == "vf-remove" ? nil : p.previousAutoprobe)
                _ = try? inventory.refresh()
                notes.append("\(p.pf): VF count \(now.numVFs) → \(target)")
            }
            // NVMe: the secondary controllers as the creation found them and, if it freed the
            // primary's flexible resources, those given back (an allocation and a PF reset).
            if kind == "vf-create", let note = try p.undoNVMe(NVMeVFProvisioner(root: root, writer: writer)) {
                notes.append(note)
                _ = try? inventory.refresh()
            }
            return (state, notes.joined(separator: "; "))
        } catch {
            return ("failed", "\(p.pf): " + (notes + ["\(error)"]).joined(separator: "; "))
        }
    }
}

/// NVMe resources for VFs created through the API (the CLI has its own twin in its local mode).
public struct NVMeVFResources: VFResourceProvisioner {
    public let provisioner: NVMeVFProvisioner
    public let queues: Int
    public let interrupts: Int
    /// What `prepare` found and changed, for `rollBack`.
    private let undo = Undo()
    /// Told what `rollBack` would need, before anything changes (the secondaries as found, with the
    /// preparation once the primary's resources are about to be freed); if it throws, nothing changes.
    private let record: (@Sendable ([NVMeSecondaryController], NVMeVFProvisioner.Preparation?) throws -> Void)?

    private final class Undo: @unchecked Sendable {
        let lock = NSLock()
        /// The secondary controllers as `prepare` found them.
        var secondaries: [NVMeSecondaryController]?
        /// Set when `prepare` began freeing the primary controller's flexible resources.
        var preparation: NVMeVFProvisioner.Preparation?
    }

    public init(provisioner: NVMeVFProvisioner, queues: Int, interrupts: Int,
                record: (@Sendable ([NVMeSecondaryController], NVMeVFProvisioner.Preparation?) throws -> Void)? = nil) {
        self.provisioner = provisioner
        self.queues = queues
        self.interrupts = interrupts
        self.record = record
    }

    public func prepare(pf: PCIAddress, dryRun: Bool) throws -> [HostAction] {
        let undo = self.undo, record = self.record
        var found: [NVMeSecondaryController] = []
        if !dryRun {
            found = try provisioner.status(pf: pf)
            let secondaries = found
            undo.lock.withLock { undo.secondaries = secondaries; undo.preparation = nil }
            try record?(secondaries, nil)
        }
        let secondaries = found
        return try provisioner.prepareForVFs(pf: pf, dryRun: dryRun) { (p) throws(SRIOVError) in
            do { try record?(secondaries, p) } catch {
                throw SRIOVError(code: .io, message: "\(pf): recording what freeing the NVMe primary's flexible resources changes failed, so nothing was changed: \(error)")
            }
            undo.lock.withLock { undo.preparation = p }
        }
    }

    /// Puts the secondary controllers back as `prepare` found them and, if `prepare` freed the
    /// primary's flexible resources, gives them back (an allocation and a PF reset).
    public func rollBack(pf: PCIAddress) throws {
        let (secondaries, preparation) = undo.lock.withLock { (undo.secondaries, undo.preparation) }
        if let preparation {
            try provisioner.undoPreparation(preparation, secondaries: secondaries)
        } else if let secondaries {
            try provisioner.restore(pf: pf, secondaries: secondaries)
        }
    }

    public func provision(pf: PCIAddress, vfIndex: Int, dryRun: Bool) throws -> [HostAction] {
        try provisioner.provision(pf: pf, vfIndex: vfIndex, queues: queues, interrupts: interrupts, dryRun: dryRun)
    }
}

extension VFOperationInfo {
    public init(_ r: VFProvisioning.Result, dryRun: Bool = false) {
        self.init(pf: r.pf.description, dryRun: dryRun, numVFs: r.numVFs,
                  vfs: r.vfs.map { .init(index: $0.index, address: $0.address.description, driver: $0.driver,
                                         iommuGroup: $0.iommuGroup, actions: $0.actions.map(\.description)) },
                  actions: r.actions.map(\.description))
    }
}
