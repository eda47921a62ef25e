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
            resources = NVMeVFResources(provisioner: NVMeVFProvisioner(root: root, writer: writer), queues: q, interrupts: i)
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

/// The payload of a `vf-create` / `vf-remove` intent: `PF COUNT previous=N [autoprobe=0|1]`.
struct VFIntent: Equatable {
    var pf: PCIAddress
    var count: Int
    var previousCount: Int
    var previousAutoprobe: Bool?

    var text: String {
        "\(pf) \(count) previous=\(previousCount)" + (previousAutoprobe.map { " autoprobe=\($0 ? 1 : 0)" } ?? "")
    }

    init(pf: PCIAddress, count: Int, previousCount: Int, previousAutoprobe: Bool?) {
        self.pf = pf
        self.count = count
        self.previousCount = previousCount
        self.previousAutoprobe = previousAutoprobe
    }

    /// Nil for a payload this version did not write (older intents name only the PF and count).
    init?(parsing text: String) {
        let f = text.split(separator: " ").map(String.init)
        guard f.count >= 3, let pf = try? PCIAddress(parsing: f[0]), let count = Int(f[1]),
              f[2].hasPrefix("previous="), let previous = Int(f[2].dropFirst(9)) else { return nil }
        self.init(pf: pf, count: count, previousCount: previous,
                  previousAutoprobe: f.count > 3 && f[3].hasPrefix("autoprobe=") ? f[3] == "autoprobe=1" : nil)
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
        do {
            let now = try manager.physicalFunction(p.pf).sriov
            if now.numVFs == target && (kind == "vf-remove" || p.previousAutoprobe == nil || now.driversAutoprobe == p.previousAutoprobe) {
                return (kind == "vf-remove" ? "done" : "rolled-back", "\(p.pf) already has \(target) VFs")
            }
            try manager.setCount(pf: p.pf, count: target, autoprobe: kind == "vf-remove" ? nil : p.previousAutoprobe)
            _ = try? inventory.refresh()
            return (kind == "vf-remove" ? "done" : "rolled-back", "\(p.pf): VF count \(now.numVFs) → \(target)")
        } catch {
            return ("failed", "\(p.pf): \(error)")
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

    private final class Undo: @unchecked Sendable {
        let lock = NSLock()
        /// The secondary controllers as `prepare` found them.
        var secondaries: [NVMeSecondaryController]?
        /// Set when `prepare` began freeing the primary controller's flexible resources.
        var preparation: NVMeVFProvisioner.Preparation?
    }

    public init(provisioner: NVMeVFProvisioner, queues: Int, interrupts: Int) {
        self.provisioner = provisioner
        self.queues = queues
        self.interrupts = interrupts
    }

    public func prepare(pf: PCIAddress, dryRun: Bool) throws -> [HostAction] {
        if !dryRun {
            let secondaries = try provisioner.status(pf: pf)
            undo.lock.withLock { undo.secondaries = secondaries; undo.preparation = nil }
        }
        let record = undo
        return try provisioner.prepareForVFs(pf: pf, dryRun: dryRun) { p in record.lock.withLock { record.preparation = p } }
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
