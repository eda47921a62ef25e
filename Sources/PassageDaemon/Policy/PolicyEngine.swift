import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// Compares the policy with the host: one step per rule and PF, read-only. Only PFs a rule names
/// are looked at; a PF whose VFs are claimed keeps its VF count.
public struct PolicyPlanner: Sendable {
    public let root: SysfsRoot

    public init(root: SysfsRoot) { self.root = root }

    /// Whether `d` (a PF) is what `m` names.
    public func matches(_ m: Policy.PFMatch, _ d: PCIDevice) -> Bool {
        if let a = m.address, d.address != a { return false }
        if let v = m.vendorID, d.vendorID != v { return false }
        if let v = m.deviceID, d.deviceID != v { return false }
        if let c = m.classPrefix, !d.classCode(hasPrefix: c) { return false }
        if let drv = m.driver, d.driver != drv { return false }
        if let name = m.interface, !SysfsRoot.entries(root.devicePath(d.address) + "/net").contains(name) { return false }
        if let serial = m.nvmeSerial {
            let controllers = SysfsRoot.entries(root.devicePath(d.address) + "/nvme")
            guard controllers.contains(where: { SysfsRoot.readAttribute(root.devicePath(d.address) + "/nvme/\($0)/serial")?.trimmingCharacters(in: .whitespaces) == serial }) else { return false }
        }
        return true
    }

    public func plan(_ policy: Policy, snapshot: InventoryCache.Snapshot, holds: [Int: String], only: Set<PCIAddress>? = nil) -> [PolicyStepInfo] {
        entries(policy, snapshot: snapshot, holds: holds, only: only).map(\.step)
    }

    /// One planned step with the rule and PF it is about; `runnable` when convergence should
    /// carry it out (a PF is governed by the first rule that matches it; no PF, nothing to run).
    struct Entry {
        var rule: Policy.PFRule
        var pf: PCIAddress?
        var step: PolicyStepInfo
        var runnable: Bool
    }

    func entries(_ policy: Policy, snapshot: InventoryCache.Snapshot, holds: [Int: String], only: Set<PCIAddress>? = nil) -> [Entry] {
        var out: [Entry] = []
        var taken: [PCIAddress: String] = [:]
        for rule in policy.pfs {
            let pfs = snapshot.devices.filter { $0.sriov != nil && matches(rule.match, $0) }
            if pfs.isEmpty {
                let nonSRIOV = snapshot.devices.first { $0.sriov == nil && matches(rule.match, $0) }
                out.append(Entry(rule: rule, pf: nil, step: PolicyStepInfo(pf: nil, rule: rule.label, action: "absent",
                                 detail: nonSRIOV.map { "\($0.address) matches but has no SR-IOV capability" } ?? "no PF matches (yet)"), runnable: false))
                continue
            }
            for pf in pfs where only?.contains(pf.address) ?? true {
                if let other = taken[pf.address] {
                    out.append(Entry(rule: rule, pf: pf.address, step: PolicyStepInfo(pf: pf.address.description, rule: rule.label, action: "skipped",
                                     detail: "\(pf.address) is already governed by \(other)"), runnable: false))
                    continue
                }
                taken[pf.address] = rule.label
                out.append(Entry(rule: rule, pf: pf.address, step: step(rule, pf, snapshot: snapshot, holds: holds), runnable: true))
            }
        }
        return out
    }

    func step(_ rule: Policy.PFRule, _ pf: PCIDevice, snapshot: InventoryCache.Snapshot, holds: [Int: String]) -> PolicyStepInfo {
        let s = pf.sriov!
        let a = pf.address.description
        let vfs = s.vfs.compactMap { snapshot.device($0.address) }
        let claimed = vfs.filter { $0.iommuGroup.flatMap { holds[$0] } != nil }
        if s.numVFs != rule.vfs {
            if !claimed.isEmpty {
                let ids = Set(claimed.compactMap { $0.iommuGroup.flatMap { holds[$0] } }).sorted()
                return PolicyStepInfo(pf: a, rule: rule.label, action: "skipped",
                                      detail: "wants \(rule.vfs) VFs, has \(s.numVFs); \(claimed.count) of them claimed (\(ids.joined(separator: ", "))): the count stays until they are released")
            }
            if rule.vfs > s.totalVFs {
                return PolicyStepInfo(pf: a, rule: rule.label, action: "skipped", detail: "wants \(rule.vfs) VFs but the PF supports at most \(s.totalVFs)")
            }
            if rule.vfs == 0 {
                return PolicyStepInfo(pf: a, rule: rule.label, action: "remove-vfs", detail: "remove its \(s.numVFs) VFs", devices: vfs.map(\.address.description))
            }
            var what = "\(s.numVFs) → \(rule.vfs) VFs"
            if let q = rule.nvmeQueues, let i = rule.nvmeInterrupts { what += ", NVMe \(q) queues / \(i) interrupts each" }
            what += rule.vfDriver == .vfio ? ", on vfio-pci" : ", host drivers"
            if !rule.links.isEmpty { what += "; then link settings of VF \(rule.links.keys.sorted().map(String.init).joined(separator: ", "))" }
            return PolicyStepInfo(pf: a, rule: rule.label, action: "create-vfs", detail: what)
        }
        let free = vfs.filter { $0.iommuGroup.flatMap { holds[$0] } == nil }
        switch rule.vfDriver {
        case .vfio:
            let wrong = free.filter { $0.driver != "vfio-pci" }
            if !wrong.isEmpty {
                return PolicyStepInfo(pf: a, rule: rule.label, action: "bind-vfs",
                                      detail: "bind \(wrong.count) VF\(wrong.count == 1 ? "" : "s") to vfio-pci (" + wrong.map { "\($0.address) on \($0.driver ?? "no driver")" }.joined(separator: ", ") + ")",
                                      devices: wrong.map(\.address.description))
            }
        case .host:
            let wrong = free.filter { $0.driver == "vfio-pci" || $0.driverOverride == "vfio-pci" }
            if !wrong.isEmpty {
                return PolicyStepInfo(pf: a, rule: rule.label, action: "restore-vfs",
                                      detail: "give \(wrong.count) VF\(wrong.count == 1 ? "" : "s") back to the host's drivers", devices: wrong.map(\.address.description))
            }
        }
        if !rule.links.isEmpty {
            let client = VFLinkClient(root: root)
            guard let interface = try? client.interface(for: pf.address) else {
                return PolicyStepInfo(pf: a, rule: rule.label, action: "skipped", detail: "link settings need the PF's network interface; \(a) has none")
            }
            let current = (try? client.vfs(interface: interface)) ?? []
            var differing: [String] = []
            for (index, settings) in rule.links.sorted(by: { $0.key < $1.key }) {
                let info = current.first { $0.index == index }
                if info.map({ !$0.mismatches(with: settings).isEmpty }) ?? true { differing.append("VF \(index): \(settings.summary)") }
            }
            if !differing.isEmpty {
                return PolicyStepInfo(pf: a, rule: rule.label, action: "set-links", detail: "on \(interface): " + differing.joined(separator: "; "))
            }
        }
        return PolicyStepInfo(pf: a, rule: rule.label, action: "ok",
                              detail: "\(s.numVFs) VFs" + (rule.vfDriver == .vfio ? " on vfio-pci" : "") + (claimed.isEmpty ? "" : ", \(claimed.count) claimed"))
    }
}

/// The policy in force, the last refusal, and the last convergence.
public final class PolicyState: @unchecked Sendable {
    private let lock = NSLock()
    private var _policy: Policy
    private var _rejected: String?
    private var _lastSteps: [PolicyStepInfo] = []
    public let path: String

    public init(path: String) {
        self.path = path
        _policy = Policy(file: path)
    }

    public var policy: Policy { lock.withLock { _policy } }
    public var rejected: String? { lock.withLock { _rejected } }
    public var lastSteps: [PolicyStepInfo] { lock.withLock { _lastSteps } }

    func install(_ p: Policy) { lock.withLock { _policy = p; _rejected = nil } }
    func reject(_ why: String) { lock.withLock { _rejected = why } }
    func record(_ steps: [PolicyStepInfo]) { lock.withLock { _lastSteps = steps } }
}

extension ClaimService {
    /// Reads the policy file again. A file that does not parse is refused and the policy in
    /// force stays (the refusal is kept for `GET /v1/policy` and published as an event).
    public func reloadPolicy(_ state: PolicyState) throws -> Policy {
        do {
            let p = try Policy.load(state.path)
            state.install(p)
            try syncPolicyPools(p)
            events.publish("policy-loaded", message: "policy \(state.path): \(p.pfs.count) PF rule(s), \(p.pools.count) pool(s)")
            return p
        } catch let e as PolicyError {
            state.reject(e.description)
            events.publish("policy-rejected", message: "\(e.description); the previous policy stays in force")
            throw APIError(422, "policy-invalid", "\(e.description); the previous policy stays in force")
        }
    }

    /// Pools of the policy go into the store as `source: policy`; policy pools no longer in the
    /// file are deleted; pools defined over the API stay.
    func syncPolicyPools(_ p: Policy) throws {
        let existing = try store.pools()
        for rule in p.pools {
            let json = String(decoding: try StreamingJSONEncoder(pretty: false).encode(rule.selector), as: UTF8.self)
            if let e = existing.first(where: { $0.name == rule.name }), e.selector == json, e.source == "policy" { continue }
            try store.putPool(name: rule.name, selector: json, source: "policy", now: Self.now())
        }
        for e in existing where e.source == "policy" && !p.pools.contains(where: { $0.name == e.name }) {
            _ = try store.deletePool(name: e.name)
        }
    }

    /// The plan now, changing nothing.
    public func planPolicy(_ p: Policy) throws -> [PolicyStepInfo] {
        PolicyPlanner(root: root).plan(p, snapshot: try inventory.current(), holds: try groupHolds())
    }

    /// Brings the host to the policy, one PF at a time (each PF's step is planned again right
    /// before it runs, inside the daemon's one-change-at-a-time queue): idempotent, touching only
    /// PFs a rule names and their VFs, never changing the count of a PF with claimed VFs.
    public func converge(_ p: Policy, state: PolicyState? = nil, only: Set<PCIAddress>? = nil) async -> [PolicyStepInfo] {
        guard ready else { return [] }
        let planner = PolicyPlanner(root: root)
        let planned: [PolicyPlanner.Entry]
        do {
            planned = planner.entries(p, snapshot: try inventory.current(), holds: try groupHolds(), only: only)
        } catch {
            return [PolicyStepInfo(pf: nil, rule: "policy", action: "skipped", detail: "cannot read the host: \(error)", outcome: "failed")]
        }
        var results: [PolicyStepInfo] = []
        for entry in planned {
            guard entry.runnable, let pf = entry.pf else {
                results.append(entry.step)
                continue
            }
            let rule = entry.rule
            let result: PolicyStepInfo
            do {
                result = try await serialized { () throws -> PolicyStepInfo in
                    let snapshot = try self.inventory.current()
                    guard let device = snapshot.device(pf), device.sriov != nil else {
                        return PolicyStepInfo(pf: pf.description, rule: rule.label, action: "absent", detail: "\(pf) is gone")
                    }
                    var step = planner.step(rule, device, snapshot: snapshot, holds: try self.groupHolds())
                    do {
                        try self.execute(&step, rule: rule, pf: pf)
                    } catch {
                        step.outcome = "failed"
                        step.error = "\(error)"
                    }
                    return step
                }
            } catch {
                result = PolicyStepInfo(pf: pf.description, rule: rule.label, action: "skipped", detail: "\(error)", outcome: "failed", error: "\(error)")
            }
            if result.action != "ok" && result.action != "absent" {
                events.publish("policy-step", address: result.pf,
                               message: "\(result.rule): \(result.action) \(result.detail) → \(result.outcome ?? "planned")" + (result.error.map { ": \($0)" } ?? ""))
            }
            results.append(result)
            if result.outcome == "done" { publishPoolReadiness(p, pf: pf) }
        }
        state?.record(results)
        return results
    }

    /// Runs one planned step (serialized by the caller).
    private func execute(_ step: inout PolicyStepInfo, rule: Policy.PFRule, pf: PCIAddress) throws {
        switch step.action {
        case "create-vfs":
            let request = VFCreateRequest(count: rule.vfs, driver: rule.vfDriver == .vfio ? "vfio-pci" : nil,
                                          autoprobe: rule.vfDriver == .host ? true : nil,
                                          nvmeQueues: rule.nvmeQueues, nvmeInterrupts: rule.nvmeInterrupts)
            let result = try createVFsNow(pf: pf, request: request) { _ in }
            step.devices = result.vfs.map(\.address)
            for (index, settings) in rule.links.sorted(by: { $0.key < $1.key }) {
                let client = VFLinkClient(root: root)
                try client.apply(settings, vf: index, interface: try client.interface(for: pf), dryRun: false)
            }
        case "remove-vfs":
            _ = try removeVFsNow(pf: pf)
        case "bind-vfs":
            for d in step.devices {
                _ = try passthrough.bind(try PCIAddress(parsing: d), driver: "vfio-pci")
            }
            _ = try? inventory.refresh(step.devices.compactMap { try? PCIAddress(parsing: $0) })
        case "restore-vfs":
            for d in step.devices {
                _ = try passthrough.binder.reprobe(try PCIAddress(parsing: d))
            }
            _ = try? inventory.refresh(step.devices.compactMap { try? PCIAddress(parsing: $0) })
        case "set-links":
            let client = VFLinkClient(root: root)
            let interface = try client.interface(for: pf)
            for (index, settings) in rule.links.sorted(by: { $0.key < $1.key }) {
                try client.apply(settings, vf: index, interface: interface, dryRun: false)
            }
        default:
            return  // ok, absent, skipped: nothing to run
        }
        step.outcome = "done"
    }

    /// After a PF was changed to match: each policy pool with members under it says how many are free.
    private func publishPoolReadiness(_ p: Policy, pf: PCIAddress) {
        guard let pools = try? store.pools().filter({ r in p.pools.contains { $0.name == r.name } }), !pools.isEmpty,
              let snapshot = try? inventory.current() else { return }
        let children = Set(snapshot.devices.filter { $0.physfn == pf }.map(\.address.description))
        for r in pools {
            guard let info = try? poolInfo(r), info.members.contains(where: { children.contains($0) }) else { continue }
            events.publish("pool-ready", address: pf.description,
                           message: "pool \(info.name): \(info.members.count) member(s), \(info.free) free, after \(pf) converged")
        }
    }
}
