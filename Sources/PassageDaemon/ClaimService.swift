import Dispatch
import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// Claims: a consumer takes whole IOMMU groups, bound to vfio-pci, and gives them back.
///
/// Every change to the host runs on one serial queue (no two changes to the host at once, and
/// blocking sysfs work never occupies Swift's cooperative threads), is recorded in the store before
/// it touches sysfs, and is finished or undone at start-up (`reconcile`) if the daemon died in between.
///
/// A claim or release takes the queue only for its sysfs work: deciding (and reading its groups),
/// then binding or restoring. Its store writes are awaited off the queue, so while one waits for
/// its fsync the queue serves the next request, and the writes of concurrent requests share
/// fsyncs (the store's group commit). What is decided but not yet durable is kept in `flight`.
public final class ClaimService: @unchecked Sendable {
    public let store: Store
    public let root: SysfsRoot
    public let writer: any SysfsWriter
    public let inventory: InventoryCache
    public let events: EventHub
    public let usage: HostUsage
    private let queue = DispatchQueue(label: "passage.changes")
    let flight = InFlight()
    private let readyLock = NSLock()
    private var _ready = false
    private var _serving = false
    /// How long a bind may take before it counts as failed (the binder's `bindTimeout`); set before use.
    public var bindTimeout: Double = 5

    public init(store: Store, root: SysfsRoot, writer: any SysfsWriter, inventory: InventoryCache, events: EventHub,
                usage: HostUsage? = nil) {
        self.store = store
        self.root = root
        self.writer = writer
        self.inventory = inventory
        self.events = events
        self.usage = usage ?? HostUsage(root: root)
    }

    /// False until start-up reconciliation has finished: releases and policy changes wait for it
    /// (`awaitReconciled`), and hot-plug does not mark claims lost before.
    public var ready: Bool { readyLock.withLock { _ready } }

    /// True once start-up reconciliation has read what it must finish or undo (before it does it):
    /// from then on passaged answers (health 200, `reconciled: false` until `ready`), reads show
    /// unfinished claims as binding or releasing, and a new claim is taken and waits on the change
    /// queue behind the undo. A restart that must undo kernel work (a VF creation, a bind) is thus
    /// serving as soon as its state is read, not once the kernel is done.
    public var serving: Bool { readyLock.withLock { _serving } }

    /// Returns once start-up reconciliation is done: a request that arrives while it still undoes
    /// what a stop cut short waits for it (a client that saw health 200 is never told to come
    /// back). 503 `reconciling` before passaged serves, or after `limit`.
    public func awaitReconciled(limit: Duration = .seconds(60)) async throws {
        let refusal = APIError(503, "reconciling", "passaged is still reconciling its state after start-up; retry in a moment")
        guard serving else { throw refusal }
        let deadline = ContinuousClock.now + limit
        while !ready {
            guard ContinuousClock.now < deadline else { throw refusal }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The binder every change goes through.
    var binder: DriverBinder {
        var b = DriverBinder(root: root, writer: writer)
        b.bindTimeout = bindTimeout
        return b
    }

    var passthrough: PassthroughBinder {
        PassthroughBinder(binder: binder, usage: usage)
    }

    /// Runs `body` on the change queue.
    public func serialized<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            queue.async {
                do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
            }
        }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: create

    /// Creates a claim (or returns the one made earlier with the same idempotency key: `replayed`).
    ///
    /// Decide (on the change queue: the functions, their groups read once from sysfs, the safety
    /// checks, the groups reserved in `flight`), record the intent (durable before sysfs is touched),
    /// bind (on the change queue), mark it done (durable before the answer).
    public func create(_ r: ClaimRequest) async throws -> (claim: Store.ClaimRecord, replayed: Bool) {
        guard serving else {
            throw APIError(503, "reconciling", "passaged is still reconciling its state with the host after start-up; retry in a moment (GET /v1/health says when it is ready)")
        }
        try Self.validate(r)
        // One create per idempotency key at a time: a retry that comes while the first is still
        // binding waits for it, then finds its claim.
        if let key = r.idempotencyKey { await flight.enter(key: key) }
        defer { if let key = r.idempotencyKey { flight.leave(key: key) } }

        let plan: ClaimPlan
        switch try await serialized({ try self.planClaim(r) }) {
        case let .existing(claim): return (claim, true)
        case let .new(p): plan = p
        }
        let intent: Int64
        do {
            intent = try await store.commit { tx throws(StoreError) in
                try tx.beginClaim(id: plan.id, owner: r.owner, idempotencyKey: r.idempotencyKey, request: plan.request,
                                  devices: plan.members, now: plan.createdAt)
            }
            flight.unreserve(plan.groups)  // the store has the holds now
        } catch {
            flight.unreserve(plan.groups)
            guard error.constraint else { throw APIError(error) }
            throw APIError(409, "group-taken", "one of the IOMMU groups \(plan.groups) was taken by another claim at the same moment; retry")
        }
        do {
            try await serialized { try self.bindClaim(plan) }
        } catch {
            let api = APIError(error)
            let (id, owner) = (plan.id, r.owner)
            _ = try? await store.commit({ tx throws(StoreError) in try tx.failClaim(id: id, intent: intent, error: api.message, now: Self.now()) },
                                        whenDurable: { _ in self.events.publish("claim-failed", claimId: id, message: "claim \(id) for \(owner) failed: \(api.message)") })
            throw api
        }
        let claim = Store.ClaimRecord(id: plan.id, owner: r.owner, idempotencyKey: r.idempotencyKey, state: .active, createdAt: plan.createdAt,
                                      updatedAt: Self.now(), request: plan.request, error: nil, devices: plan.members.sorted { $0.address < $1.address })
        try await store.commit({ tx throws(StoreError) in try tx.finishClaim(id: claim.id, intent: intent, now: claim.updatedAt) },
                               whenDurable: { _ in
                                   self.events.publish("claim-created", claimId: claim.id, message: "claim \(claim.id) for \(claim.owner): \(claim.devices.map(\.address).joined(separator: ", ")) (groups \(claim.groups.map(String.init).joined(separator: ", ")))")
                               })
        return (claim, false)
    }

    static func validate(_ r: ClaimRequest) throws {
        let owner = r.owner.trimmingCharacters(in: .whitespaces)
        guard !owner.isEmpty, owner.count <= 128 else { throw APIError.badRequest("owner must be 1 to 128 characters naming the consumer (e.g. \"vm-42\")") }
        if let k = r.idempotencyKey, k.isEmpty || k.count > 128 { throw APIError.badRequest("idempotencyKey must be 1 to 128 characters") }
        switch (r.devices, r.selector) {
        case let (devices?, nil):
            guard !devices.isEmpty, devices.count <= 256 else { throw APIError.badRequest("devices must list 1 to 256 PCI addresses") }
            guard r.count == nil else { throw APIError.badRequest("count goes with selector, not with devices") }
        case (nil, _?):
            guard let n = r.count, n >= 1, n <= 256 else { throw APIError.badRequest("a selector claim needs count, 1 to 256") }
        default:
            throw APIError.badRequest("give either devices (a list of PCI addresses) or selector with count")
        }
    }

    /// A claim decided on and not yet recorded.
    struct ClaimPlan: Sendable {
        var id: String
        var request: String
        var createdAt: Int64
        /// Every function to bind, group by group (the one asked for first), with what it had before.
        var members: [Store.ClaimDevice]
        var groups: [Int]
    }

    enum PlanOutcome: Sendable {
        /// Made earlier with the same idempotency key.
        case existing(Store.ClaimRecord)
        case new(ClaimPlan)
    }

    /// Decides a claim (on the change queue): the functions, each group read once from sysfs for
    /// both the safety checks and the drivers to restore, and its groups reserved in `flight`.
    private func planClaim(_ r: ClaimRequest) throws -> PlanOutcome {
        if let key = r.idempotencyKey, let existing = try store.claim(idempotencyKey: key) {
            guard existing.owner == r.owner else {
                throw APIError(409, "idempotency-key-reused", "idempotency key \(key) belongs to claim \(existing.id) of owner \(existing.owner)")
            }
            return .existing(existing)
        }
        // The cached inventory picks the functions; their groups are read from sysfs below, so a
        // claim decides on the current drivers without rescanning every function.
        let snapshot = try inventory.current()
        let holds = try groupHolds()

        // The functions asked for.
        var requested: [PCIDevice] = []
        if let list = r.devices {
            for text in list {
                let a: PCIAddress
                do { a = try PCIAddress(parsing: text) } catch { throw APIError(error) }
                guard let d = snapshot.device(a) else { throw APIError(404, "device-not-found", "no PCI device \(a) on this host; GET /v1/devices lists them") }
                if !requested.contains(where: { $0.address == a }) { requested.append(d) }
            }
        } else if let selector = r.selector, let count = r.count {
            requested = try select(selector, count: count, devices: snapshot.devices, groups: snapshot.groups, holds: holds)
        }

        // Whole groups, each read once: the binder's safety checks (no host-used device, no bridge)
        // return the functions a whole-group bind changes, with their current drivers.
        var members: [Store.ClaimDevice] = []
        var groupsSeen: [Int] = []
        for d in requested {
            guard !d.isBridge else { throw APIError(409, "not-assignable", "\(d.address) is a PCI bridge; bridges stay with the host") }
            guard let g = d.iommuGroup else {
                throw APIError(409, "group-not-viable", "\(d.address) has no IOMMU group: the IOMMU is off; enable VT-d/AMD-Vi and boot with intel_iommu=on or amd_iommu=on")
            }
            if let holder = holds[g] {
                throw APIError(409, "group-taken", "IOMMU group \(g) of \(d.address) is held by claim \(holder); release it first (DELETE /v1/claims/\(holder))")
            }
            guard !groupsSeen.contains(g) else { continue }
            groupsSeen.append(g)
            let targets: [PCIDevice]
            do { targets = try passthrough.targets(d.address, driver: "vfio-pci", wholeGroup: true, force: false) } catch { throw APIError(error) }
            for m in targets {
                members.append(Store.ClaimDevice(address: m.address.description, iommuGroup: g, previousDriver: m.driver,
                                                 previousOverride: m.driverOverride,
                                                 requested: requested.contains { $0.address == m.address }))
            }
        }
        let id = randomID("c-")
        flight.reserve(groupsSeen, for: id)
        let requestJSON = String(decoding: (try? StreamingJSONEncoder(pretty: false).encode(r)) ?? [], as: UTF8.self)
        return .new(ClaimPlan(id: id, request: requestJSON, createdAt: Self.now(), members: members, groups: groupsSeen.sorted()))
    }

    /// Binds a recorded claim's functions (on the change queue); on failure puts back what moved.
    /// The inventory re-reads the functions the bind changed (all of them after a failure).
    private func bindClaim(_ plan: ClaimPlan) throws {
        let addresses = plan.members.compactMap { try? PCIAddress(parsing: $0.address) }
        var done: [DriverBinder.Change] = []
        do {
            for a in addresses {
                let change = try binder.bind(a, to: "vfio-pci")
                if change.changed { done.append(change) }
            }
        } catch {
            for c in done.reversed() { binder.rollback(c.address, previousDriver: c.previousDriver, previousOverride: c.previousOverride) }
            _ = try? inventory.refresh(addresses)
            let undone = done.map(\.address.description)
            let note = undone.isEmpty ? "" : "; \(undone.joined(separator: ", ")) \(undone.count == 1 ? "was" : "were") put back too"
            throw HostPCIError(code: error.code, message: error.message + note, errno: error.errno)
        }
        if !done.isEmpty { _ = try? inventory.refresh(done.map(\.address)) }
    }

    /// IOMMU group → the claim holding it, with the groups of claims decided and not yet recorded.
    public func groupHolds() throws -> [Int: String] {
        let inFlight = flight.reservedGroups  // before the store: a reservation goes only once its holds are committed
        return try store.groupHolds().merging(inFlight) { held, _ in held }
    }

    /// Picks `count` free functions (in distinct, free IOMMU groups) that match the selector.
    func select(_ s: DeviceSelector, count: Int, devices: [PCIDevice], groups: [IOMMUGroup], holds: [Int: String]) throws -> [PCIDevice] {
        let matches = try matcher(s)
        let matching = devices.filter(matches)
        var picked: [PCIDevice] = []
        var used = Set<Int>()
        for d in matching where holds[d.iommuGroup!] == nil && !used.contains(d.iommuGroup!) {
            picked.append(d)
            used.insert(d.iommuGroup!)
            if picked.count == count { break }
        }
        guard picked.count == count else {
            throw APIError(409, "not-enough-devices", "the selector matches \(matching.count) function\(matching.count == 1 ? "" : "s") in \(Set(matching.compactMap(\.iommuGroup)).count) IOMMU group(s), of which \(picked.count) \(picked.count == 1 ? "is" : "are") free; asked for \(count)")
        }
        return picked
    }

    /// The test a selector puts a function to; a `pool` in it adds the pool's own selector (AND).
    func matcher(_ s: DeviceSelector) throws -> (PCIDevice) -> Bool {
        var poolTest: ((PCIDevice) -> Bool)?
        if let name = s.pool {
            guard let record = try store.pools().first(where: { $0.name == name }) else {
                throw APIError(404, "pool-not-found", "no pool named \(name); GET /v1/pools lists them, PUT /v1/pools/\(name) defines it")
            }
            let inner = try JSONDecoder().decode(DeviceSelector.self, from: Data(record.selector.utf8))
            guard inner.pool == nil else { throw APIError(500, "internal", "pool \(name) refers to another pool") }
            poolTest = try matcher(inner)
        }
        let vendor = try s.vendorId.map { v -> UInt16 in
            guard v.count == 4, let x = UInt16(v, radix: 16) else { throw APIError.badRequest("selector.vendorId \(v): expected 4 hex digits") }
            return x
        }
        let device = try s.deviceId.map { v -> UInt16 in
            guard v.count == 4, let x = UInt16(v, radix: 16) else { throw APIError.badRequest("selector.deviceId \(v): expected 4 hex digits") }
            return x
        }
        if let c = s.classCode, !([2, 4, 6].contains(c.count) && UInt32(c, radix: 16) != nil) {
            throw APIError.badRequest("selector.classCode \(c): expected 2, 4 or 6 hex digits")
        }
        let pf = try s.pf.map { t -> PCIAddress in
            do { return try PCIAddress(parsing: t) } catch { throw APIError(error) }
        }
        return { d in
            !d.isBridge && d.iommuGroup != nil
                && (vendor == nil || d.vendorID == vendor) && (device == nil || d.deviceID == device)
                && (s.classCode.map { d.classCode(hasPrefix: $0) } ?? true)
                && (pf == nil || d.physfn == pf) && (s.numaNode == nil || d.numaNode == s.numaNode)
                && (s.driver == nil || (s.driver == "none" ? d.driver == nil : d.driver == s.driver))
                && (poolTest?(d) ?? true)
        }
    }

    // MARK: pools

    static func validPoolName(_ n: String) -> Bool {
        guard let first = n.unicodeScalars.first, n.unicodeScalars.count <= 63,
              ("a"..."z").contains(first) || ("0"..."9").contains(first) else { return false }
        return n.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    /// A pool as the API shows it, against the current inventory and claims.
    public func poolInfo(_ r: Store.PoolRecord) throws -> PoolInfo {
        let selector = try JSONDecoder().decode(DeviceSelector.self, from: Data(r.selector.utf8))
        let matches = try matcher(selector)
        let members = try inventory.current().devices.filter(matches)
        let holds = try groupHolds()
        let claimed = members.filter { holds[$0.iommuGroup!] != nil }.count
        return PoolInfo(name: r.name, selector: selector, source: r.source, members: members.map(\.address.description),
                        free: members.count - claimed, claimed: claimed)
    }

    /// Defines or replaces a pool; returns it and whether it is new.
    public func putPool(name: String, selector: DeviceSelector, source: String = "api") throws -> (PoolInfo, created: Bool) {
        guard Self.validPoolName(name) else {
            throw APIError.badRequest("pool name \(name): 1 to 63 of a-z, 0-9, '-', '_', '.', starting with a letter or digit")
        }
        guard selector.pool == nil else { throw APIError.badRequest("a pool's selector cannot name another pool") }
        guard selector != DeviceSelector() else {
            throw APIError.badRequest("a pool needs at least one of selector.vendorId, deviceId, classCode, pf, numaNode, driver")
        }
        _ = try matcher(selector)  // invalid values are refused before anything is stored
        let json = String(decoding: try StreamingJSONEncoder(pretty: false).encode(selector), as: UTF8.self)
        let created = try store.putPool(name: name, selector: json, source: source, now: Self.now())
        let info = try poolInfo(try store.pools().first { $0.name == name }!)
        events.publish("pool-\(created ? "created" : "changed")", message: "pool \(name): \(info.members.count) member(s), \(info.free) free")
        return (info, created)
    }

    public func deletePool(name: String) throws -> PoolInfo {
        guard let r = try store.pools().first(where: { $0.name == name }) else {
            throw APIError(404, "pool-not-found", "no pool named \(name); GET /v1/pools lists them")
        }
        let info = try poolInfo(r)
        _ = try store.deletePool(name: name)
        events.publish("pool-deleted", message: "pool \(name) deleted (claims made from it stay)")
        return info
    }

    // MARK: release

    /// Gives a claim's devices back to the drivers they had. Releasing a released claim returns it unchanged.
    ///
    /// Record the intent (durable before sysfs is touched), restore (on the change queue), mark it
    /// done (durable before the answer). A second release of the same claim meanwhile is refused.
    public func release(id: String) async throws -> Store.ClaimRecord {
        try await awaitReconciled()
        guard flight.beginRelease(id) else { throw APIError(409, "claim-busy", "claim \(id) is releasing; retry in a moment") }
        defer { flight.endRelease(id) }
        guard var claim = try store.claim(id: id) else { throw APIError.notFound("no claim \(id); GET /v1/claims lists them") }
        switch claim.state {
        case .released, .failed: return claim
        case .binding, .releasing:
            throw APIError(409, "claim-busy", "claim \(id) is \(claim.state.rawValue); retry in a moment")
        case .active, .lost: break
        }
        let started = Self.now()
        let intent = try await store.commit { tx throws(StoreError) in try tx.beginRelease(id: id, now: started) }
        let devices = claim.devices
        let (problems, failure) = try await serialized { self.releaseDevices(devices) }
        if let failure {
            // All or nothing: the devices are as the claim had them, so the claim stays (and holds its groups).
            let (state, message) = (claim.state, "releasing claim \(id) failed: \(failure); the claim keeps its devices: retry the release")
            _ = try? await store.commit({ tx throws(StoreError) in try tx.abortRelease(id: id, intent: intent, state: state, now: Self.now()) },
                                        whenDurable: { _ in self.events.publish("claim-release-failed", claimId: id, message: message) })
            throw APIError(500, "release-failed", message)
        }
        claim.state = .released
        claim.error = problems.isEmpty ? nil : problems.joined(separator: "; ")
        claim.updatedAt = Self.now()
        let released = claim
        try await store.commit({ tx throws(StoreError) in try tx.finishRelease(id: id, intent: intent, error: released.error, now: released.updatedAt) },
                               whenDurable: { _ in
                                   self.events.publish("claim-released", claimId: id, message: "claim \(id) of \(released.owner) released" + (problems.isEmpty ? "" : " with problems: " + problems.joined(separator: "; ")))
                               })
        return released
    }

    /// A release's restore, all or nothing (on the change queue): when a device that is present
    /// cannot be put back, the devices already put back return to how the claim had them, and the
    /// failure is returned. A vanished device is a problem to report, not a failure.
    func releaseDevices(_ devices: [Store.ClaimDevice]) -> (problems: [String], failure: String?) {
        let binder = self.binder
        var problems: [String] = []
        var done: [(address: PCIAddress, driver: String?, override: String?)] = []
        var touched: [PCIAddress] = []
        defer { if !touched.isEmpty { _ = try? inventory.refresh(touched) } }
        for d in devices {
            guard let a = try? PCIAddress(parsing: d.address) else { continue }
            guard SysfsRoot.exists(root.devicePath(a)) else { problems.append("\(a) is no longer present"); continue }
            let (driver, override) = (binder.currentDriver(a), binder.currentOverride(a))
            do {
                if try binder.restore(a, to: d.previousDriver, override: d.previousOverride).changed {
                    done.append((a, driver, override))
                    touched.append(a)
                }
            } catch {
                touched.append(a)  // the binder put it back as it was
                var undo: [String] = []
                for b in done.reversed() {
                    do { _ = try binder.restore(b.address, to: b.driver, override: b.override) } catch { undo.append(error.message) }
                }
                let back = done.map(\.address.description).joined(separator: ", ")
                return (problems, error.message + (done.isEmpty ? "" : undo.isEmpty
                    ? "; \(back) \(done.count == 1 ? "was" : "were") put back on \(done.count == 1 ? "its" : "their") claimed driver too"
                    : "; putting \(back) back on the claimed driver also failed: " + undo.joined(separator: "; ")))
            }
        }
        return (problems, nil)
    }

    /// Puts each device back on the driver it had (idempotent); returns what could not be done and
    /// the functions it changed or tried to (the ones the inventory must re-read).
    func restoreDevices(_ devices: [Store.ClaimDevice]) -> (problems: [String], touched: [PCIAddress]) {
        var problems: [String] = []
        var touched: [PCIAddress] = []
        for d in devices {
            guard let a = try? PCIAddress(parsing: d.address) else { continue }
            guard SysfsRoot.exists(root.devicePath(a)) else { problems.append("\(a) is no longer present"); continue }
            do {
                if try binder.restore(a, to: d.previousDriver, override: d.previousOverride).changed { touched.append(a) }
            } catch {
                problems.append(error.message)
                touched.append(a)
            }
        }
        return (problems, touched)
    }

    // MARK: start-up

    public struct ReconcileReport: Sendable {
        public var rolledBack: [String] = []
        public var finished: [String] = []
        /// What start-up did about each operation cut short (VF creations and removals).
        public var notes: [String] = []
        public var lost: [String] = []
        public var seconds: Double = 0
    }

    /// Finishes or undoes every unfinished intent, checks active claims against sysfs, then opens
    /// for everything. `serving` is called (once the unfinished intents are read, before any is
    /// finished or undone) with how many there are: passaged answers from then on.
    @discardableResult
    public func reconcile(serving: @escaping @Sendable (Int) -> Void = { _ in }) async throws -> ReconcileReport {
        try await serialized { try self.reconcileNow(serving: serving) }
    }

    private func reconcileNow(serving: (Int) -> Void) throws -> ReconcileReport {
        let start = Date()
        var report = ReconcileReport()
        let pending = try store.pendingIntents()
        readyLock.withLock { _serving = true }
        serving(pending.count)
        for intent in pending {
            switch intent.kind {
            case "claim":
                if let id = intent.claimID, let claim = try store.claim(id: id) {
                    let problems = restoreDevices(claim.devices.filter { d in
                        guard let a = try? PCIAddress(parsing: d.address) else { return false }
                        return binder.currentDriver(a) != d.previousDriver
                            || binder.currentOverride(a) != d.previousOverride
                    }).problems
                    try store.failClaim(id: id, intent: intent.id, error: "rolled back at start-up: passaged stopped while binding" + (problems.isEmpty ? "" : " (\(problems.joined(separator: "; ")))"), now: Self.now())
                    report.rolledBack.append(id)
                    events.publish("claim-failed", claimId: id, message: "claim \(id) rolled back at start-up")
                } else {
                    try store.endIntent(intent.id, state: "rolled-back", now: Self.now())
                }
            case "release":
                if let id = intent.claimID, let claim = try store.claim(id: id) {
                    let problems = restoreDevices(claim.devices).problems
                    try store.finishRelease(id: id, intent: intent.id, error: problems.isEmpty ? nil : problems.joined(separator: "; "), now: Self.now())
                    report.finished.append(id)
                    events.publish("claim-released", claimId: id, message: "claim \(id) release finished at start-up")
                } else {
                    try store.endIntent(intent.id, state: "rolled-back", now: Self.now())
                }
            case "vf-create", "vf-remove":
                let (state, note) = recoverVFIntent(kind: intent.kind, payload: intent.payload)
                try store.endIntent(intent.id, state: state, now: Self.now())
                if state == "done" { report.finished.append("intent \(intent.id)") } else { report.rolledBack.append("intent \(intent.id)") }
                report.notes.append("intent \(intent.id) \(intent.kind): \(note) (\(state))")
                events.publish("operation-recovered", message: "\(intent.kind) cut short by a stop of passaged: \(note) (\(state))")
            default:
                try store.endIntent(intent.id, state: "abandoned", now: Self.now())
            }
        }
        report.lost = try markVanishedClaims(try inventory.refresh())
        report.seconds = Date().timeIntervalSince(start)
        readyLock.withLock { _ready = true }
        events.publish("reconciled", message: "start-up reconciliation done in \(String(format: "%.3f", report.seconds)) s: \(report.rolledBack.count) rolled back, \(report.finished.count) finished, \(report.lost.count) lost")
        return report
    }
}

extension ClaimService {
    /// Active claims with a device missing from `snapshot` become `lost` (a claim-lost event each).
    func markVanishedClaims(_ snapshot: InventoryCache.Snapshot) throws -> [String] {
        let present = Set(snapshot.devices.map(\.address.description))
        var lost: [String] = []
        for claim in try store.claims(states: [.active]) {
            let missing = claim.devices.map(\.address).filter { !present.contains($0) }
            if !missing.isEmpty {
                try store.markLost(id: claim.id, error: "device\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) vanished", now: Self.now())
                lost.append(claim.id)
                events.publish("claim-lost", claimId: claim.id, message: "claim \(claim.id): \(missing.joined(separator: ", ")) vanished")
            }
        }
        return lost
    }

    /// After uevents or a periodic rescan: patches `addresses` (or rescans everything when nil or
    /// when functions appeared or vanished) and marks claims on vanished devices lost. Before
    /// start-up reconciliation is done only the inventory is refreshed.
    public func applyHotplug(addresses: [PCIAddress]?) async throws {
        try await serialized {
            let snapshot = try addresses.map { try self.inventory.refresh($0) } ?? self.inventory.refresh()
            if self.ready { _ = try self.markVanishedClaims(snapshot) }
        }
    }
}

extension ClaimInfo {
    init(_ c: Store.ClaimRecord) {
        func time(_ ms: Int64) -> String { rfc3339(Date(timeIntervalSince1970: Double(ms) / 1000)) }
        self.init(id: c.id, owner: c.owner, state: c.state.rawValue, idempotencyKey: c.idempotencyKey,
                  devices: c.devices.filter(\.requested).map(\.address),
                  members: c.devices.map { .init(address: $0.address, iommuGroup: $0.iommuGroup, previousDriver: $0.previousDriver, requested: $0.requested) },
                  groups: c.groups, createdAt: time(c.createdAt), updatedAt: time(c.updatedAt), error: c.error)
    }
}

/// An id for a claim (`c-`) or an operation (`op-`): the prefix and 12 random hex digits (48 bits,
/// as the first 12 digits of a UUID gave), made without Foundation's string bridging.
func randomID(_ prefix: String) -> String {
    let hex = String(UInt64.random(in: 0..<(1 << 48)), radix: 16)
    return prefix + String(repeating: "0", count: 12 - hex.count) + hex
}
