import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// The `/v1` API: routes, JSON in and out, access control, errors with stable codes.
public final class APIHandler: HTTPHandler, @unchecked Sendable {
    public let claims: ClaimService
    public let operations: OperationRegistry
    public let authorizer: Authorizer
    public let metrics = APIMetrics()
    let started = Date()
    public static let version = "0.1.0"

    public let policy: PolicyState
    public let vms: VMSupervisor?

    public init(claims: ClaimService, authorizer: Authorizer = Authorizer(), policy: PolicyState = PolicyState(path: Policy.defaultPath),
                vms: VMSupervisor? = nil) {
        self.policy = policy
        self.vms = vms
        self.claims = claims
        self.operations = OperationRegistry(events: claims.events)
        self.authorizer = authorizer
    }

    var inventory: InventoryCache { claims.inventory }
    var events: EventHub { claims.events }

    public func handle(_ request: HTTPRequest) async -> HTTPResponse {
        let start = DispatchTime.now().uptimeNanoseconds
        let response: HTTPResponse
        do {
            response = try await route(request)
        } catch {
            let e = APIError(error)
            response = Self.error(e)
        }
        metrics.record(route: APICall.routeName(request), status: response.status, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
        return response
    }

    // MARK: routing

    func route(_ r: HTTPRequest) async throws -> HTTPResponse {
        let authorizer = self.authorizer
        let call = try APICall(r) { r in
            guard authorizer.mayChange(r.peer) else {
                throw APIError(403, "forbidden", "uid \(r.peer.map { String($0.uid) } ?? "?") may read but not change: changes need root or membership in the \(authorizer.groupName) group")
            }
        }
        switch call {
        case .metrics:
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4")], body: .bytes(Array(prometheus().utf8)))
        case .health:
            // 200 once passaged serves (start-up reconciliation has read its work); `reconciled`
            // and the status say whether that work is done.
            let ready = claims.ready, serving = claims.serving
            let active = (try? claims.store.claims(states: [.active]).count) ?? 0
            let devices = ready ? ((try? inventory.current().devices.count) ?? 0) : 0
            let info = HealthInfo(status: ready ? "ok" : "reconciling", reconciled: ready, version: Self.version,
                                  devices: devices, activeClaims: active, uptimeSeconds: Date().timeIntervalSince(started),
                                  sysfsRoot: claims.root.path)
            return try Self.json(serving ? 200 : 503, info)
        case .devices(let filter):
            if filter.isEmpty && filter.page == nil {
                let (buffer, generation) = try inventory.listJSON()
                return try Self.conditional(r, tag: inventory.entityTag(generation)) {
                    HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .buffer(buffer))
                }
            }
            let list = try inventory.encodedList()
            let snapshot = list.snapshot
            return try Self.conditional(r, tag: inventory.entityTag(snapshot.generation)) {
                var matching: [Int] = []
                var headers: [(String, String)] = []
                let limit = filter.page?.limit ?? Int.max
                // Devices are in address order: a page starts at a binary search, not a scan.
                var i = filter.page?.after.map { after in snapshot.devices.partitioningIndex(where: { $0.address > after }) } ?? 0
                while i < snapshot.wire.count {
                    if filter.matches(snapshot.wire[i]) {
                        if matching.count == limit {
                            var q = r.query
                            q["after"] = snapshot.wire[matching.last!].address
                            headers.append(("Link", "</v1/devices?\(q.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&"))>; rel=\"next\""))
                            break
                        }
                        matching.append(i)
                    }
                    i += 1
                }
                // The chosen devices' objects, copied out of the list encoded once for this snapshot.
                return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")] + headers, body: .bytes(list.array(of: matching)))
            }
        case .device(let a):
            guard let d = try inventory.current().info(a) else {
                throw APIError(404, "device-not-found", "no PCI device \(a) on this host; GET /v1/devices lists them")
            }
            return try Self.json(200, d)
        case .bind(let a, let body):
            let changes = try await claims.serialized { () throws -> [DriverBinder.Change] in
                try self.checkNotClaimed(a)
                let c = try self.claims.passthrough.bind(a, driver: body.driver ?? "vfio-pci", wholeGroup: body.group ?? false, force: body.force ?? false)
                _ = try? self.inventory.refresh(c.map(\.address))
                return c
            }
            return try Self.json(200, BindResultInfo(changes, binder: claims.passthrough.binder))
        case .restore(let a, let body):
            let change = try await claims.serialized { () throws -> DriverBinder.Change in
                try self.checkNotClaimed(a)
                let binder = self.claims.passthrough.binder
                let c: DriverBinder.Change = switch body.driver {
                case nil: try binder.reprobe(a)
                case "none": try binder.restore(a, to: nil)
                case let d?: try binder.restore(a, to: d)
                }
                _ = try? self.inventory.refresh([a])
                return c
            }
            return try Self.json(200, BindResultInfo([change], binder: claims.passthrough.binder))
        case .groups:
            return try Self.json(200, try inventory.current().groups.map(IOMMUGroupInfo.init))
        case .createVFs(let a, let body):
            _ = try VFManager(root: claims.root, writer: claims.writer).physicalFunction(a)
            let id = claims.startVFCreate(pf: a, request: body, operations: operations)
            return try Self.json(202, operations.get(id)!, headers: [("Location", "/v1/operations/\(id)")])
        case .removeVFs(let a):
            _ = try VFManager(root: claims.root, writer: claims.writer).physicalFunction(a)
            let id = claims.startVFRemove(pf: a, operations: operations)
            return try Self.json(202, operations.get(id)!, headers: [("Location", "/v1/operations/\(id)")])
        case .operations:
            return try Self.json(200, operations.all())
        case .operation(let id):
            guard let op = operations.get(id) else { throw APIError.notFound("no operation \(id)") }
            return try Self.json(200, op)
        case .claims(let names):
            let states = try names.map { try $0.map { s in
                guard let st = Store.ClaimRecord.State(rawValue: s) else { throw APIError(500, "internal-error", "claim state \(s) unknown to the store") }
                return st
            } }
            return try Self.json(200, try claims.store.claims(states: states).map(ClaimInfo.init))
        case .createClaim(let body):
            let (claim, replayed) = try await claims.create(body)
            return try Self.json(replayed ? 200 : 201, ClaimInfo(claim), headers: [("Location", "/v1/claims/\(claim.id)")])
        case .claim(let id):
            guard let c = try claims.store.claim(id: id) else { throw APIError.notFound("no claim \(id); GET /v1/claims lists them") }
            return try Self.json(200, ClaimInfo(c))
        case .releaseClaim(let id):
            // A running VM holds the group open: vfio-pci's unbind would wait for it forever.
            if let vms, let user = try vms.runningVM(using: id) {
                throw APIError(409, "claim-in-use", "claim \(id) is in use by VM \(user.name) (pid \(user.pid.map(String.init) ?? "?")); stop it first: passage vm stop \(user.name)")
            }
            return try Self.json(200, ClaimInfo(try await claims.release(id: id)))
        case .pools:
            return try Self.json(200, try claims.store.pools().map(claims.poolInfo))
        case .pool(let name):
            guard let p = try claims.store.pools().first(where: { $0.name == name }) else {
                throw APIError(404, "pool-not-found", "no pool named \(name); GET /v1/pools lists them")
            }
            return try Self.json(200, try claims.poolInfo(p))
        case .putPool(let name, let body):
            let (info, created) = try claims.putPool(name: name, selector: body.selector)
            return try Self.json(created ? 201 : 200, info, headers: [("Location", "/v1/pools/\(name)")])
        case .deletePool(let name):
            return try Self.json(200, try claims.deletePool(name: name))
        case .startVM(let body):
            let info = try await vmSupervisor().start(body)
            return try Self.json(201, info, headers: [("Location", "/v1/vms/\(info.name)")])
        case .vms:
            return try Self.json(200, try vmSupervisor().list())
        case .vm(let name):
            return try Self.json(200, try vmSupervisor().get(name))
        case .stopVM(let name):
            return try Self.json(200, try await vmSupervisor().stop(name))
        case .vmConsole(let name):
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")], body: .bytes(try vmSupervisor().console(name)))
        case .policy:
            let p = policy.policy
            return try Self.json(200, policyInfo(p, steps: try claims.planPolicy(p)))
        case .applyPolicy(let body):
            try await claims.awaitReconciled()
            if body.dryRun == true {
                // The file as it is now, planned against the host; nothing installed, nothing changed.
                let p: Policy
                do { p = try Policy.load(policy.path) } catch {
                    throw APIError(422, "policy-invalid", "\(error); the policy in force is unchanged")
                }
                return try Self.json(200, policyInfo(p, steps: try claims.planPolicy(p)))
            }
            let p = try claims.reloadPolicy(policy)
            let steps = await claims.converge(p, state: policy)
            return try Self.json(200, policyInfo(p, steps: steps))
        case .events(let since):
            let stream = events.subscribe(since: since)
            let bytes = AsyncStream<[UInt8]> { continuation in
                let task = Task {
                    for await e in stream {
                        guard var line = try? StreamingJSONEncoder(pretty: false).encode(e) else { continue }
                        line.append(UInt8(ascii: "\n"))
                        continuation.yield(line)
                    }
                    continuation.finish()
                }
                continuation.onTermination = { _ in task.cancel() }
            }
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/x-ndjson")], body: .stream(bytes))
        }
    }

    /// Devices a claim holds are changed through the claim, not behind its back.
    func checkNotClaimed(_ a: PCIAddress) throws {
        guard let g = try inventory.current().devices.first(where: { $0.address == a })?.iommuGroup,
              let holder = try claims.groupHolds()[g] else { return }
        throw APIError(409, "device-claimed", "\(a) is in IOMMU group \(g), held by claim \(holder); release the claim first")
    }

    // MARK: helpers

    func vmSupervisor() throws -> VMSupervisor {
        guard let vms else { throw APIError(501, "vms-unavailable", "this passaged serves no VMs") }
        return vms
    }

    func policyInfo(_ p: Policy, steps: [PolicyStepInfo]) -> PolicyInfo {
        PolicyInfo(file: p.file, present: FileManager.default.fileExists(atPath: p.file), pfRules: p.pfs.count,
                   pools: p.pools.map(\.name), steps: steps, rejected: policy.rejected)
    }

    /// `If-None-Match` with the current tag: 304 without a body (a poller re-checks 4,096 devices
    /// for the cost of a header); otherwise the response with its `ETag`.
    static func conditional(_ r: HTTPRequest, tag: String, _ make: () throws -> HTTPResponse) throws -> HTTPResponse {
        if let inm = r.headers["if-none-match"], inm.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == tag || $0.trimmingCharacters(in: .whitespaces) == "*" }) {
            return HTTPResponse(status: 304, headers: [("ETag", tag)])
        }
        var response = try make()
        response.headers.append(("ETag", tag))
        return response
    }

    static func json<T: Encodable>(_ status: Int, _ value: T, headers: [(String, String)] = []) throws -> HTTPResponse {
        var bytes = try StreamingJSONEncoder(pretty: false).encode(value)
        bytes.append(UInt8(ascii: "\n"))
        return HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: .bytes(bytes))
    }

    static func error(_ e: APIError) -> HTTPResponse {
        (try? json(e.status, ["error": e.info])) ?? HTTPResponse(status: e.status)
    }

    func prometheus() -> String {
        var out = metrics.prometheus()
        let claimsByState = Dictionary(grouping: (try? claims.store.claims()) ?? [], by: \.state.rawValue).mapValues(\.count)
        out += "# HELP passage_claims Claims by state.\n# TYPE passage_claims gauge\n"
        for state in ["binding", "active", "releasing", "released", "failed", "lost"] {
            out += "passage_claims{state=\"\(state)\"} \(claimsByState[state] ?? 0)\n"
        }
        let snapshot = try? inventory.current()
        out += "# HELP passage_devices PCI functions on the host.\n# TYPE passage_devices gauge\npassage_devices \(snapshot?.devices.count ?? 0)\n"
        out += "# HELP passage_iommu_groups_held IOMMU groups held by claims.\n# TYPE passage_iommu_groups_held gauge\npassage_iommu_groups_held \((try? claims.store.groupHolds().count) ?? 0)\n"
        out += "# HELP passage_reconciled 1 once start-up reconciliation is done.\n# TYPE passage_reconciled gauge\npassage_reconciled \(claims.ready ? 1 : 0)\n"
        out += "# HELP passage_event_subscribers Open event streams.\n# TYPE passage_event_subscribers gauge\npassage_event_subscribers \(events.subscriberCount)\n"
        out += "# HELP passage_sysfs_writes_total Writes to the kernel's sysfs made by this process.\n# TYPE passage_sysfs_writes_total counter\npassage_sysfs_writes_total \(KernelSysfsWriter.writesPerformed)\n"
        return out
    }
}

extension BindResultInfo {
    /// The one mapping from the binder's changes to the wire type (the CLI's local mode uses it too);
    /// in a dry run the driver is the one the device would get.
    public init(_ changes: [DriverBinder.Change], dryRun: Bool = false, binder: DriverBinder) {
        self.init(dryRun: dryRun, devices: changes.map { c in
            .init(address: c.address.description, previousDriver: c.previousDriver, previousOverride: c.previousOverride,
                  driver: dryRun ? c.newDriver : binder.currentDriver(c.address), changed: c.changed, actions: c.actions.map(\.description))
        })
    }
}

/// Request counts and latencies per route, for `/metrics`.
public final class APIMetrics: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    private var latencySum: [String: Double] = [:]
    private var buckets: [String: [Int]] = [:]
    static let bounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5]

    func record(route: String, status: Int, nanoseconds: UInt64) {
        let seconds = Double(nanoseconds) / 1e9
        lock.withLock {
            counts["\(route)|\(status)", default: 0] += 1
            latencySum[route, default: 0] += seconds
            var b = buckets[route] ?? Array(repeating: 0, count: Self.bounds.count + 1)
            let i = Self.bounds.firstIndex { seconds <= $0 } ?? Self.bounds.count
            b[i] += 1
            buckets[route] = b
        }
    }

    func prometheus() -> String {
        lock.withLock {
            var out = "# HELP passage_http_requests_total API requests by route and status.\n# TYPE passage_http_requests_total counter\n"
            for (key, n) in counts.sorted(by: { $0.key < $1.key }) {
                let p = key.split(separator: "|")
                out += "passage_http_requests_total{route=\"\(p[0])\",status=\"\(p[1])\"} \(n)\n"
            }
            out += "# HELP passage_http_request_seconds API request latency.\n# TYPE passage_http_request_seconds histogram\n"
            for (route, b) in buckets.sorted(by: { $0.key < $1.key }) {
                var cumulative = 0
                for (i, bound) in Self.bounds.enumerated() {
                    cumulative += b[i]
                    out += "passage_http_request_seconds_bucket{route=\"\(route)\",le=\"\(bound)\"} \(cumulative)\n"
                }
                cumulative += b[Self.bounds.count]
                out += "passage_http_request_seconds_bucket{route=\"\(route)\",le=\"+Inf\"} \(cumulative)\n"
                out += "passage_http_request_seconds_sum{route=\"\(route)\"} \(latencySum[route] ?? 0)\n"
                out += "passage_http_request_seconds_count{route=\"\(route)\"} \(cumulative)\n"
            }
            return out
        }
    }
}

extension Array {
    /// The first index whose element satisfies `predicate`, for a predicate that is false and then
    /// true along the array (binary search).
    func partitioningIndex(where predicate: (Element) -> Bool) -> Int {
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if predicate(self[mid]) { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
