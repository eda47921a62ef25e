import Foundation
import Testing
@testable import HostPCI
import PassageAPI
@testable import PassageDaemon

/// Routing and decoding of API requests without a server (APICall, DeviceQuery, the request as
/// the server assembles it): what the fuzz target `api-request` runs, checked on known inputs.
/// The end-to-end behaviour of each route is DaemonAPITests'.
@Suite struct APICallTests {
    func call(_ method: String, _ uri: String, _ body: String = "", mayChange: Bool = true) throws -> APICall {
        let r = HTTPRequest(method: method, uri: uri, headerFields: [], body: Array(body.utf8), peer: nil)
        return try APICall(r) { _ in if !mayChange { throw APIError(403, "forbidden", "no") } }
    }

    func refusal(_ method: String, _ uri: String, _ body: String = "", mayChange: Bool = true) -> APIError? {
        do { _ = try call(method, uri, body, mayChange: mayChange); return nil } catch { return error as? APIError }
    }

    @Test func routesAndParameters() throws {
        let a = try PCIAddress(parsing: "0000:01:00.0")
        #expect(try call("GET", "/metrics") == .metrics)
        #expect(try call("GET", "/v1/health") == .health)
        #expect(try call("GET", "/v1/devices/0000%3A01%3A00.0") == .device(a))
        #expect(try call("POST", "/v1/devices/0000:01:00.0/bind") == .bind(a, BindRequest()))
        #expect(try call("POST", "/v1/devices/0000:01:00.0/bind", #"{"driver":"vfio-pci","group":true}"#)
                == .bind(a, BindRequest(driver: "vfio-pci", group: true)))
        #expect(try call("POST", "/v1/pfs/0000:01:00.0/vfs", #"{"count":2}"#) == .createVFs(pf: a, VFCreateRequest(count: 2)))
        #expect(try call("DELETE", "/v1/pfs/0000:01:00.0/vfs") == .removeVFs(pf: a))
        #expect(try call("GET", "/v1/claims?state=active,failed") == .claims(states: ["active", "failed"]))
        #expect(try call("DELETE", "/v1/claims/c-1") == .releaseClaim(id: "c-1"))
        #expect(try call("PUT", "/v1/pools/nics", #"{"selector":{"classCode":"02"}}"#)
                == .putPool(name: "nics", PoolRequest(selector: DeviceSelector(classCode: "02"))))
        #expect(try call("GET", "/v1/vms/vm1/console") == .vmConsole(name: "vm1"))
        #expect(try call("POST", "/v1/policy/reload") == .applyPolicy(PolicyApplyRequest()))
        #expect(try call("GET", "http://localhost/v1/events?since=3") == .events(since: 3))
    }

    @Test func refusalsAre4xxInTheOrderTheHandlerChecks() {
        #expect(refusal("POST", "/metrics")?.status == 405)
        #expect(refusal("GET", "/v2/devices")?.status == 404)
        #expect(refusal("PATCH", "/v1/devices")?.status == 405)
        #expect(refusal("GET", "/v1/nothing")?.status == 404)
        // A reader's change is refused before its route or body is looked at.
        #expect(refusal("POST", "/v1/nothing", "{", mayChange: false)?.status == 403)
        #expect(refusal("GET", "/v1/devices/zz", mayChange: false)?.code == "invalid-address")
        #expect(refusal("POST", "/v1/claims", #"{"owner":"x","devics":[]}"#)?.code == "unknown-field")
        #expect(refusal("POST", "/v1/claims", #"{"owner":"x","selector":{"vendor":"8086"}}"#)?.code == "unknown-field")
        #expect(refusal("POST", "/v1/claims", #"{"owner":1}"#)?.code == "invalid-field")
        #expect(refusal("POST", "/v1/claims", "[]")?.code == "malformed-json")
        #expect(refusal("POST", "/v1/claims", " \n")?.code == "bad-request")
        #expect(refusal("POST", "/v1/pfs/0000:01:00.0/vfs", #"{"count":0}"#)?.code == "bad-request")
        #expect(refusal("GET", "/v1/claims?state=gone")?.status == 400)
        #expect(refusal("GET", "/v1/events?since=-1")?.status == 400)
    }

    /// The claim states the route accepts are the store's.
    @Test func claimStatesAreTheStoresStates() {
        #expect(APICall.claimStates.sorted() == Store.ClaimRecord.State.allCases.map(\.rawValue).sorted())
    }

    /// Regression (review of the fuzz target api-request's invariants): `class` and `vendor` took
    /// a sign, because `UInt32(_:radix:)` does (`?class=%2B2`, `?vendor=-000`).
    @Test func deviceFiltersAreHexDigitsOnly() throws {
        for bad in ["class=%2B2", "class=-0", "class=+0ab", "vendor=%2B808", "vendor=-000", "vendor=8086:%2B572", "class=0%C3%A9"] {
            #expect(throws: APIError.self, "\(bad)") { try DeviceQuery(HTTPRequestTarget("/v1/devices?" + bad).query) }
        }
        for bad in ["numa=%2B1", "numa=+1", "numa=--1", "numa=", "limit=%2B5", "limit=5x", "limit=-5", "limit=0099999999999999999999"] {
            #expect(throws: APIError.self, "\(bad)") { try DeviceQuery(HTTPRequestTarget("/v1/devices?" + bad).query) }
        }
        #expect(try DeviceQuery(["numa": "-1"]).numa == -1 && DeviceQuery(["numa": "0"]).numa == 0)
        #expect(try DeviceQuery(["limit": "50"]).page?.limit == 50)
        for bad in ["since=%2B5", "since=-1", "since=5.0"] {
            #expect(refusal("GET", "/v1/events?" + bad)?.status == 400, "\(bad)")
        }
        let q = try DeviceQuery(["class": "0C03", "vendor": "8086:1572"])
        #expect(q.classPrefix == "0c03" && q.vendor == "8086" && q.device == "1572")
    }

    @Test func requestAssembledAsTheServerDoes() {
        let r = HTTPRequest(method: "GET", uri: "/v1/devices?class=02#x",
                            headerFields: [(name: "Accept", value: "a"), (name: "ACCEPT", value: "b"), (name: "If-None-Match", value: "\"g1\"")],
                            body: [], peer: nil)
        #expect(r.path == "/v1/devices" && r.query == ["class": "02"])
        #expect(r.headers == ["accept": "a, b", "if-none-match": "\"g1\""])
        #expect(APICall.routeName(r) == "GET /v1/devices")
    }
}
