import Foundation
// Imports conditional (and no NIO, no store, no sysfs) so that the fuzz target api-request
// (scripts/fuzz.sh) can compile this file with the request types alone.
#if canImport(HostPCI)
import HostPCI
#endif
#if canImport(PassageAPI)
import PassageAPI
#endif

/// A request to the `/v1` API, routed and decoded but not yet served: which route, its path
/// parameters, its query and its JSON body, each checked. Everything the API refuses from the
/// request alone (no such route, a method the route does not take, a malformed address, an
/// unknown filter or body field, a wrong type) is refused here, with an `APIError` of status
/// 4xx; the handler (`APIHandler.route`) then only does the work.
enum APICall: Equatable {
    case metrics
    case health
    case devices(DeviceQuery)
    case device(PCIAddress)
    case bind(PCIAddress, BindRequest)
    case restore(PCIAddress, RestoreRequest)
    case groups
    case createVFs(pf: PCIAddress, VFCreateRequest)
    case removeVFs(pf: PCIAddress)
    case operations
    case operation(id: String)
    /// `?state=active,failed`: raw values of `Store.ClaimRecord.State`, checked.
    case claims(states: [String]?)
    case createClaim(ClaimRequest)
    case claim(id: String)
    case releaseClaim(id: String)
    case pools
    case pool(name: String)
    case putPool(name: String, PoolRequest)
    case deletePool(name: String)
    case startVM(VMStartRequest)
    case vms
    case vm(name: String)
    case stopVM(name: String)
    case vmConsole(name: String)
    case policy
    /// `POST /v1/policy/reload` and `/v1/policy/apply` (the same).
    case applyPolicy(PolicyApplyRequest)
    case events(since: Int?)

    /// The raw values of `Store.ClaimRecord.State` (a test holds the two together).
    static let claimStates = ["binding", "active", "releasing", "released", "failed", "lost"]

    /// Routes and decodes `r`. `authorize` is asked about every changing request (POST, PUT,
    /// PATCH, DELETE) under `/v1`, before anything else about it is checked, and throws to refuse it.
    init(_ r: HTTPRequest, authorize: (HTTPRequest) throws -> Void) throws {
        let parts = r.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if r.path == "/metrics" {
            guard r.method == "GET" else { throw Self.methodNotAllowed(r, "GET") }
            self = .metrics
            return
        }
        guard parts.first == "v1", parts.count >= 2 else {
            throw APIError.notFound("no route \(r.path); the API lives under /v1 (see docs/api.md)")
        }
        let mutating = r.method == "POST" || r.method == "DELETE" || r.method == "PUT" || r.method == "PATCH"
        if mutating { try authorize(r) }
        switch (r.method, parts[1], parts.count) {
        case ("GET", "health", 2):
            self = .health
        case ("GET", "devices", 2):
            self = .devices(try DeviceQuery(r.query))
        case ("GET", "devices", 3):
            self = .device(try Self.address(parts[2]))
        case ("POST", "devices", 4) where parts[3] == "bind":
            let a = try Self.address(parts[2])
            self = .bind(a, try Self.decode(BindRequest.self, r.body, keys: BindRequest.keys, allowEmpty: true) ?? BindRequest())
        case ("POST", "devices", 4) where parts[3] == "restore":
            let a = try Self.address(parts[2])
            self = .restore(a, try Self.decode(RestoreRequest.self, r.body, keys: RestoreRequest.keys, allowEmpty: true) ?? RestoreRequest())
        case ("GET", "groups", 2):
            self = .groups
        case ("POST", "pfs", 4) where parts[3] == "vfs":
            let a = try Self.address(parts[2])
            guard let body = try Self.decode(VFCreateRequest.self, r.body, keys: VFCreateRequest.keys) else {
                throw APIError.badRequest("send {\"count\": N} (and optionally driver, autoprobe, nvmeQueues, nvmeInterrupts)")
            }
            guard body.count >= 1 else { throw APIError.badRequest("count must be at least 1; DELETE /v1/pfs/\(a)/vfs removes VFs") }
            self = .createVFs(pf: a, body)
        case ("DELETE", "pfs", 4) where parts[3] == "vfs":
            self = .removeVFs(pf: try Self.address(parts[2]))
        case ("GET", "operations", 2):
            self = .operations
        case ("GET", "operations", 3):
            self = .operation(id: parts[2])
        case ("GET", "claims", 2):
            self = .claims(states: try r.query["state"].map { s -> [String] in
                try s.split(separator: ",").map {
                    guard Self.claimStates.contains(String($0)) else {
                        throw APIError.badRequest("state \($0): expected binding, active, releasing, released, failed or lost")
                    }
                    return String($0)
                }
            })
        case ("POST", "claims", 2):
            guard let body = try Self.decode(ClaimRequest.self, r.body, keys: ClaimRequest.keys, nested: ["selector": DeviceSelector.keys]) else {
                throw APIError.badRequest("send {\"owner\": \"…\", \"devices\": [\"0000:3b:00.1\"]} or {\"owner\": \"…\", \"selector\": {…}, \"count\": N}")
            }
            self = .createClaim(body)
        case ("GET", "claims", 3):
            self = .claim(id: parts[2])
        case ("DELETE", "claims", 3):
            self = .releaseClaim(id: parts[2])
        case ("GET", "pools", 2):
            self = .pools
        case ("GET", "pools", 3):
            self = .pool(name: parts[2])
        case ("PUT", "pools", 3):
            guard let body = try Self.decode(PoolRequest.self, r.body, keys: PoolRequest.keys, nested: ["selector": DeviceSelector.keys]) else {
                throw APIError.badRequest("send {\"selector\": {\"vendorId\": \"8086\", \"pf\": \"0000:3b:00.0\", …}}")
            }
            self = .putPool(name: parts[2], body)
        case ("DELETE", "pools", 3):
            self = .deletePool(name: parts[2])
        case ("POST", "vms", 2):
            guard let body = try Self.decode(VMStartRequest.self, r.body, keys: VMStartRequest.keys) else {
                throw APIError.badRequest("send {\"name\": \"vm1\", \"kernel\": \"/boot/vmlinuz\", \"initramfs\": …, \"memory\": \"512M\", \"vcpus\": 2}")
            }
            self = .startVM(body)
        case ("GET", "vms", 2):
            self = .vms
        case ("GET", "vms", 3):
            self = .vm(name: parts[2])
        case ("POST", "vms", 4) where parts[3] == "stop":
            self = .stopVM(name: parts[2])
        case ("GET", "vms", 4) where parts[3] == "console":
            self = .vmConsole(name: parts[2])
        case ("GET", "policy", 2):
            self = .policy
        case ("POST", "policy", 3) where parts[2] == "reload" || parts[2] == "apply":
            self = .applyPolicy(try Self.decode(PolicyApplyRequest.self, r.body, keys: PolicyApplyRequest.keys, allowEmpty: true) ?? PolicyApplyRequest())
        case ("GET", "events", 2):
            self = .events(since: try r.query["since"].map { s -> Int in
                guard let n = DeviceQuery.decimal(s) else { throw APIError.badRequest("since \(s): expected an event sequence number") }
                return n
            })
        default:
            let known: [String: [String]] = ["health": ["GET"], "devices": ["GET", "POST"], "groups": ["GET"], "pfs": ["POST", "DELETE"],
                                             "operations": ["GET"], "claims": ["GET", "POST", "DELETE"], "pools": ["GET", "PUT", "DELETE"], "events": ["GET"], "policy": ["GET", "POST"], "vms": ["GET", "POST"]]
            if let methods = known[parts[1]], !methods.contains(r.method) { throw Self.methodNotAllowed(r, methods.joined(separator: ", ")) }
            throw APIError.notFound("no route \(r.method) \(r.path) (see docs/api.md)")
        }
    }

    /// The route a request counts under in `/metrics`: method and the first two path segments
    /// (`GET /v1/devices/…`), so that addresses and ids do not make a series each.
    static func routeName(_ r: HTTPRequest) -> String {
        let parts = r.path.split(separator: "/")
        guard parts.count >= 2 else { return r.method + " " + r.path }
        return r.method + " /" + parts.prefix(2).joined(separator: "/") + (parts.count > 2 ? "/…" : "")
    }

    /// A PCI address from a path segment (percent-decoded first: `0000%3A01%3A00.0`).
    static func address(_ text: String) throws -> PCIAddress {
        let decoded = text.removingPercentEncoding ?? text
        do { return try PCIAddress(parsing: decoded) } catch { throw APIError(error) }
    }

    static func methodNotAllowed(_ r: HTTPRequest, _ allowed: String) -> APIError {
        APIError(405, "method-not-allowed", "\(r.method) is not allowed on \(r.path); use \(allowed)")
    }

    /// Decodes a JSON body strictly: unknown fields are an error (a typo must not be ignored silently).
    /// `nested` names object-valued fields whose own keys are checked too. An empty body (or one of
    /// white space only) is nil when `allowEmpty`, else an error.
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
}
