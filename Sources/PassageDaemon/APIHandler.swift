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
        metrics.record(route: Self.routeName(request), status: response.status, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
        return response
    }

    // MARK: routing

    static func routeName(_ r: HTTPRequest) -> String {
        let parts = r.path.split(separator: "/")
        guard parts.count >= 2 else { return r.method + " " + r.path }
        return r.method + " /" + parts.prefix(2).joined(separator: "/") + (parts.count > 2 ? "/…" : "")
    }

    func route(_ r: HTTPRequest) async throws -> HTTPResponse {
        let parts = r.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if r.path == "/metrics" {
            guard r.method == "GET" else { throw Self.methodNotAllowed(r, "GET") }
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4")], body: .bytes(Array(prometheus().utf8)))
        }
        guard parts.first == "v1", parts.count >= 2 else {
            throw APIError.notFound("no route \(r.path); the API lives under /v1 (see docs/api.md)")
        }
        let mutating = r.method == "POST" || r.method == "DELETE" || r.method == "PUT" || r.method == "PATCH"
        if mutating && !authorizer.mayChange(r.peer) {
            throw APIError(403, "forbidden", "uid \(r.peer.map { String($0.uid) } ?? "?") may read but not change: changes need root or membership in the \(authorizer.groupName) group")
        }
        switch (r.method, parts[1], parts.count) {
        case ("GET", "health", 2):
            let ready = claims.ready
            let active = (try? claims.store.claims(states: [.active]).count) ?? 0
            let devices = ready ? ((try? inventory.current().devices.count) ?? 0) : 0
            let info = HealthInfo(status: ready ? "ok" : "reconciling", reconciled: ready, version: Self.version,
                                  devices: devices, activeClaims: active, uptimeSeconds: Date().timeIntervalSince(started),
                                  sysfsRoot: claims.root.path)
            return try Self.json(ready ? 200 : 503, info)
        case ("GET", "devices", 2):
            let filter = try DeviceQuery(r.query)
            if filter.isEmpty && filter.page == nil {
                let (buffer, generation) = try inventory.listJSON()
                return try Self.conditional(r, tag: inventory.entityTag(generation)) {
                    HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .buffer(buffer))
                }
            }
            let snapshot = try inventory.current()
            return try Self.conditional(r, tag: inventory.entityTag(snapshot.generation)) {
                var matching: [DeviceInfo] = []
                var headers: [(String, String)] = []
                let limit = filter.page?.limit ?? Int.max
                // Devices are in address order: a page starts at a binary search, not a scan.
                var i = filter.page?.after.map { after in snapshot.devices.partitioningIndex(where: { $0.address > after }) } ?? 0
                while i < snapshot.wire.count {
                    if filter.matches(snapshot.wire[i]) {
                        if matching.count == limit {
                            var q = r.query
                            q["after"] = matching.last!.address
                            headers.append(("Link", "</v1/devices?\(q.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&"))>; rel=\"next\""))
                            break
                        }
                        matching.append(snapshot.wire[i])
                    }
                    i += 1
                }
                var response = try Self.json(200, matching)
                response.headers += headers
                return response
            }
        case ("GET", "devices", 3):
            let a = try Self.address(parts[2])
            guard let d = try inventory.current().info(a) else {
                throw APIError(404, "device-not-found", "no PCI device \(a) on this host; GET /v1/devices lists them")
            }
            return try Self.json(200, d)
        case ("POST", "devices", 4) where parts[3] == "bind":
            let a = try Self.address(parts[2])
            let body = try Self.decode(BindRequest.self, r.body, keys: BindRequest.keys, allowEmpty: true) ?? BindRequest()
            let changes = try await claims.serialized { () throws -> [DriverBinder.Change] in
                try self.checkNotClaimed(a)
                let c = try self.claims.passthrough.bind(a, driver: body.driver ?? "vfio-pci", wholeGroup: body.group ?? false, force: body.force ?? false)
                _ = try? self.inventory.refresh(c.map(\.address))
                return c
            }
            return try Self.json(200, BindResultInfo(changes, binder: claims.passthrough.binder))
        case ("POST", "devices", 4) where parts[3] == "restore":
            let a = try Self.address(parts[2])
            let body = try Self.decode(RestoreRequest.self, r.body, keys: RestoreRequest.keys, allowEmpty: true) ?? RestoreRequest()
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
        case ("GET", "groups", 2):
            return try Self.json(200, try inventory.current().groups.map(IOMMUGroupInfo.init))
        case ("POST", "pfs", 4) where parts[3] == "vfs":
            let a = try Self.address(parts[2])
            guard let body = try Self.decode(VFCreateRequest.self, r.body, keys: VFCreateRequest.keys) else {
                throw APIError.badRequest("send {\"count\": N} (and optionally driver, autoprobe, nvmeQueues, nvmeInterrupts)")
            }
            guard body.count >= 1 else { throw APIError.badRequest("count must be at least 1; DELETE /v1/pfs/\(a)/vfs removes VFs") }
            _ = try VFManager(root: claims.root, writer: claims.writer).physicalFunction(a)
            let id = claims.startVFCreate(pf: a, request: body, operations: operations)
            return try Self.json(202, operations.get(id)!, headers: [("Location", "/v1/operations/\(id)")])
        case ("DELETE", "pfs", 4) where parts[3] == "vfs":
            let a = try Self.address(parts[2])
            _ = try VFManager(root: claims.root, writer: claims.writer).physicalFunction(a)
            let id = claims.startVFRemove(pf: a, operations: operations)
            return try Self.json(202, operations.get(id)!, headers: [("Location", "/v1/operations/\(id)")])
        case ("GET", "operations", 2):
            return try Self.json(200, operations.all())
        case ("GET", "operations", 3):
            guard let op = operations.get(parts[2]) else { throw APIError.notFound("no operation \(parts[2])") }
            return try Self.json(200, op)
        case ("GET", "claims", 2):
            let states = try r.query["state"].map { s -> [Store.ClaimRecord.State] in
                try s.split(separator: ",").map {
                    guard let st = Store.ClaimRecord.State(rawValue: String($0)) else {
                        throw APIError.badRequest("state \($0): expected binding, active, releasing, released, failed or lost")
                    }
                    return st
                }
            }
            return try Self.json(200, try claims.store.claims(states: states).map(ClaimInfo.init))
        case ("POST", "claims", 2):
            guard let body = try Self.decode(ClaimRequest.self, r.body, keys: ClaimRequest.keys, nested: ["selector": DeviceSelector.keys]) else {
                throw APIError.badRequest("send {\"owner\": \"…\", \"devices\": [\"0000:3b:00.1\"]} or {\"owner\": \"…\", \"selector\": {…}, \"count\": N}")
            }
            let (claim, replayed) = try await claims.create(body)
            return try Self.json(replayed ? 200 : 201, ClaimInfo(claim), headers: [("Location", "/v1/claims/\(claim.id)")])
        case ("GET", "claims", 3):
            guard let c = try claims.store.claim(id: parts[2]) else { throw APIError.notFound("no claim \(parts[2]); GET /v1/claims lists them") }
            return try Self.json(200, ClaimInfo(c))
        case ("DELETE", "claims", 3):
            // A running VM holds the group open: vfio-pci's unbind would wait for it forever.
            if let vms, let user = try vms.runningVM(using: parts[2]) {
                throw APIError(409, "claim-in-use", "claim \(parts[2]) is in use by VM \(user.name) (pid \(user.pid.map(String.init) ?? "?")); stop it first: passage vm stop \(user.name)")
            }
            return try Self.json(200, ClaimInfo(try await claims.release(id: parts[2])))
        case ("GET", "pools", 2):
            return try Self.json(200, try claims.store.pools().map(claims.poolInfo))
        case ("GET", "pools", 3):
            guard let p = try claims.store.pools().first(where: { $0.name == parts[2] }) else {
                throw APIError(404, "pool-not-found", "no pool named \(parts[2]); GET /v1/pools lists them")
            }
            return try Self.json(200, try claims.poolInfo(p))
        case ("PUT", "pools", 3):
            guard let body = try Self.decode(PoolRequest.self, r.body, keys: PoolRequest.keys, nested: ["selector": DeviceSelector.keys]) else {
                throw APIError.badRequest("send {\"selector\": {\"vendorId\": \"8086\", \"pf\": \"0000:3b:00.0\", …}}")
            }
            let (info, created) = try claims.putPool(name: parts[2], selector: body.selector)
            return try Self.json(created ? 201 : 200, info, headers: [("Location", "/v1/pools/\(parts[2])")])
        case ("DELETE", "pools", 3):
            return try Self.json(200, try claims.deletePool(name: parts[2]))
        case ("POST", "vms", 2):
            guard let body = try Self.decode(VMStartRequest.self, r.body, keys: VMStartRequest.keys) else {
                throw APIError.badRequest("send {\"name\": \"vm1\", \"kernel\": \"/boot/vmlinuz\", \"initramfs\": …, \"memory\": \"512M\", \"vcpus\": 2}")
            }
            let info = try await vmSupervisor().start(body)
            return try Self.json(201, info, headers: [("Location", "/v1/vms/\(info.name)")])
        case ("GET", "vms", 2):
            return try Self.json(200, try vmSupervisor().list())
        case ("GET", "vms", 3):
            return try Self.json(200, try vmSupervisor().get(parts[2]))
        case ("POST", "vms", 4) where parts[3] == "stop":
            return try Self.json(200, try await vmSupervisor().stop(parts[2]))
        case ("GET", "vms", 4) where parts[3] == "console":
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")], body: .bytes(try vmSupervisor().console(parts[2])))
        case ("GET", "policy", 2):
            let p = policy.policy
            return try Self.json(200, policyInfo(p, steps: try claims.planPolicy(p)))
        case ("POST", "policy", 3) where parts[2] == "reload" || parts[2] == "apply":
            let body = try Self.decode(PolicyApplyRequest.self, r.body, keys: PolicyApplyRequest.keys, allowEmpty: true) ?? PolicyApplyRequest()
            guard claims.ready else { throw APIError(503, "reconciling", "passaged is still reconciling its state after start-up; retry in a moment") }
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
        case ("GET", "events", 2):
            let since = try r.query["since"].map { s -> Int in
                guard let n = Int(s), n >= 0 else { throw APIError.badRequest("since \(s): expected an event sequence number") }
                return n
            }
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
        default:
            let known: [String: [String]] = ["health": ["GET"], "devices": ["GET", "POST"], "groups": ["GET"], "pfs": ["POST", "DELETE"],
                                             "operations": ["GET"], "claims": ["GET", "POST", "DELETE"], "pools": ["GET", "PUT", "DELETE"], "events": ["GET"], "policy": ["GET", "POST"], "vms": ["GET", "POST"]]
            if let methods = known[parts[1]], !methods.contains(r.method) { throw Self.methodNotAllowed(r, methods.joined(separator: ", ")) }
            throw APIError.notFound("no route \(r.method) \(r.path) (see docs/api.md)")
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

    static func address(_ text: String) throws -> PCIAddress {
        let decoded = text.removingPercentEncoding ?? text
        do { return try PCIAddress(parsing: decoded) } catch { throw APIError(error) }
    }

    static func methodNotAllowed(_ r: HTTPRequest, _ allowed: String) -> APIError {
        APIError(405, "method-not-allowed", "\(r.method) is not allowed on \(r.path); use \(allowed)")
    }

    static func json<T: Encodable>(_ status: Int, _ value: T, headers: [(String, String)] = []) throws -> HTTPResponse {
        var bytes = try StreamingJSONEncoder(pretty: false).encode(value)
        bytes.append(UInt8(ascii: "\n"))
        return HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: .bytes(bytes))
    }

    static func error(_ e: APIError) -> HTTPResponse {
        (try? json(e.status, ["error": e.info])) ?? HTTPResponse(status: e.status)
    }

    /// Decodes a JSON body strictly: unknown fields are an error (a typo must not be ignored silently).
    static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8], keys: Set<String>, nested: [String: Set<String>] = [:],
                                     allowEmpty: Bool = false) throws -> T? {
        if body.isEmpty || body.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) {
            if allowEmpty { return nil }
            throw APIError.badRequest("the request needs a JSON body")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: Data(body)) } catch {
            throw APIError(400, "malformed-json", "the body is not valid JSON: \(error.localizedDescription)")
        }
        guard let dict = object as? [String: Any] else { throw APIError(400, "malformed-json", "the body must be a JSON object") }
        let unknown = Set(dict.keys).subtracting(keys)
        guard unknown.isEmpty else {
            throw APIError(400, "unknown-field", "unknown field\(unknown.count == 1 ? "" : "s") \(unknown.sorted().joined(separator: ", ")); allowed: \(keys.sorted().joined(separator: ", "))")
        }
        for (key, allowed) in nested {
            guard let inner = dict[key], !(inner is NSNull) else { continue }
            guard let innerDict = inner as? [String: Any] else { throw APIError.badRequest("\(key) must be a JSON object") }
            let bad = Set(innerDict.keys).subtracting(allowed)
            guard bad.isEmpty else {
                throw APIError(400, "unknown-field", "unknown field\(bad.count == 1 ? "" : "s") in \(key): \(bad.sorted().joined(separator: ", ")); allowed: \(allowed.sorted().joined(separator: ", "))")
            }
        }
        do { return try JSONDecoder().decode(T.self, from: Data(body)) } catch let DecodingError.typeMismatch(_, ctx) {
            throw APIError(400, "invalid-field", "\(ctx.codingPath.map(\.stringValue).joined(separator: ".")): \(ctx.debugDescription)")
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError(400, "missing-field", "missing field \(key.stringValue)")
        } catch let DecodingError.valueNotFound(_, ctx) {
            throw APIError(400, "invalid-field", "\(ctx.codingPath.map(\.stringValue).joined(separator: ".")) must not be null")
        } catch {
            throw APIError(400, "invalid-field", "\(error)")
        }
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

/// Query filters of `GET /v1/devices`: `class`, `vendor` (`8086` or `8086:1572`), `driver` (`none`), `sriov`, `numa`.
struct DeviceQuery {
    var classPrefix: (String)?
    var vendor: String?
    var device: String?
    var driver: String?
    var sriov = false
    var numa: Int?

    init(_ q: [String: String]) throws {
        let allowed: Set<String> = ["class", "vendor", "driver", "sriov", "numa", "limit", "after"]
        let unknown = Set(q.keys).subtracting(allowed)
        guard unknown.isEmpty else { throw APIError.badRequest("unknown filter \(unknown.sorted().joined(separator: ", ")); filters: \(allowed.sorted().joined(separator: ", "))") }
        if let c = q["class"] {
            guard [2, 4, 6].contains(c.count), UInt32(c, radix: 16) != nil else { throw APIError.badRequest("class \(c): expected 2, 4 or 6 hex digits") }
            classPrefix = c.lowercased()
        }
        if let v = q["vendor"] {
            let p = v.lowercased().split(separator: ":", omittingEmptySubsequences: false)
            guard (1...2).contains(p.count), p.allSatisfy({ $0.count == 4 && UInt16($0, radix: 16) != nil }) else {
                throw APIError.badRequest("vendor \(v): expected 8086 or 8086:1572")
            }
            vendor = String(p[0])
            device = p.count == 2 ? String(p[1]) : nil
        }
        driver = q["driver"]
        if let s = q["sriov"] { sriov = s == "1" || s == "true" }
        if let n = q["numa"] {
            guard let x = Int(n) else { throw APIError.badRequest("numa \(n): expected a node number") }
            numa = x
        }
        if q["limit"] != nil || q["after"] != nil {
            let limit = try q["limit"].map { t -> Int in
                guard let n = Int(t), (1...100_000).contains(n) else { throw APIError.badRequest("limit \(t): expected 1 to 100000 devices per page") }
                return n
            } ?? 1000
            let after = try q["after"].map { t -> PCIAddress in
                do { return try PCIAddress(parsing: t) } catch { throw APIError.badRequest("after \(t): expected the PCI address of the last device of the previous page (\(error))") }
            }
            page = (limit, after)
        }
    }

    /// `limit` devices (default 1000) after the address `after`, in address order; a `Link` header
    /// with `rel="next"` when more follow.
    var page: (limit: Int, after: PCIAddress?)?

    var isEmpty: Bool { classPrefix == nil && vendor == nil && driver == nil && !sriov && numa == nil }

    func matches(_ d: DeviceInfo) -> Bool {
        if let c = classPrefix, !d.classCode.hasPrefix(c) { return false }
        if let v = vendor, d.vendorId != v { return false }
        if let v = device, d.deviceId != v { return false }
        if let drv = driver, drv == "none" ? d.driver != nil : d.driver != drv { return false }
        if sriov && d.sriov == nil && d.physfn == nil { return false }
        if let n = numa, d.numaNode != n { return false }
        return true
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
