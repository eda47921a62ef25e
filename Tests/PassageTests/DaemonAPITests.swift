import Foundation
import Logging
import Testing
@testable import HostPCI
import PassageAPI
import SRIOV
@testable import PassageDaemon
import SysfsFixtures

/// The daemon over a fixture tree and a simulated kernel, served by the real HTTP server on a real
/// Unix socket, driven by real HTTP clients (curl, and the project's client for the races).
final class DaemonHarness: @unchecked Sendable {
    let fixture: SysfsFixture
    let kernel: SimulatedKernel
    let stateDir: String
    var daemon: Daemon
    let socket: String
    var serverTask: Task<Void, any Error>?

    static func a(_ s: String) -> PCIAddress { try! PCIAddress(parsing: s) }

    init(extraGroups: Int = 0) throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        for i in 0..<extraGroups {  // plain functions, one per IOMMU group, on e1000
            var d = FixtureDevice(try PCIAddress(bus: 0x10, device: UInt8(i), function: 0), vendor: 0x8086, device: 0x10d3, class: 0x020000)
            d.driver = "e1000e"
            d.iommuGroup = 100 + i
            try fixture.add(d)
        }
        try fixture.addDriver("vfio-pci")
        kernel = SimulatedKernel(fixture: fixture)
        for (a, d) in [("05:00.0", "e1000"), ("05:00.1", "e1000"), ("01:02.1", "iavf"), ("00:03.0", "virtio-pci")] { kernel.naturalDrivers[Self.a(a)] = d }
        stateDir = fixture.root.path + ".state"
        socket = fixture.root.path + ".sock"
        daemon = try Self.makeDaemon(stateDir, fixture, kernel)
    }

    static func makeDaemon(_ stateDir: String, _ fixture: SysfsFixture, _ kernel: any SysfsWriter) throws -> Daemon {
        try Daemon(stateDirectory: stateDir, root: fixture.root, writer: kernel,
                   usage: HostUsage(root: fixture.root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }))
    }

    /// Starts serving (mode 0666 so that a test client running as nobody can connect and be refused by uid).
    func start(reconcile: Bool = true) async throws {
        if reconcile { try await daemon.claims.reconcile() }
        let server = try UnixHTTPServer(socketPath: socket, mode: 0o666, handler: daemon.api, logger: Logger(label: "test"))
        serverTask = Task { try await server.run() }
    }

    func stop() async {
        serverTask?.cancel()
        _ = await serverTask?.result
        serverTask = nil
    }

    func cleanup() {
        fixture.remove()
        try? FileManager.default.removeItem(atPath: stateDir)
        try? FileManager.default.removeItem(atPath: socket)
    }

    /// curl against the socket: (status, body). Runs on a GCD thread: a blocking wait on Swift's
    /// cooperative threads would starve the server's handlers, which run there.
    func curl(_ method: String, _ path: String, _ body: String? = nil, asUser user: String? = nil, extra: [String] = []) async throws -> (Int, String) {
        try await blocking { try self.curlNow(method, path, body, asUser: user, extra: extra) }
    }

    func curlNow(_ method: String, _ path: String, _ body: String? = nil, asUser user: String? = nil, extra: [String] = []) throws -> (Int, String) {
        var args = ["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", socket, "-X", method, "http://localhost" + path] + extra
        if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
        let r: ProcessResult
        if let user {
            r = try runProcess("/usr/sbin/runuser", ["-u", user, "--", "/usr/bin/curl"] + args)
        } else {
            r = try runProcess("/usr/bin/curl", args)
        }
        let text = r.text
        guard let nl = text.lastIndex(of: "\n"), let status = Int(text[text.index(after: nl)...]) else {
            throw TestSetupError("curl gave no status (exit \(r.status), \(method) \(path)): \(text) \(r.stderr)")
        }
        return (status, String(text[..<nl]))
    }

    func json(_ body: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
    }

    /// driver/override of every function, and the group holds: what a request may change.
    func hostState() throws -> String {
        let devices = try PCIInventory(root: fixture.root, lookUpNames: false).devices()
        let holds = try daemon.store.groupHolds()
        return devices.map { "\($0.address)=\($0.driver ?? "-")/\($0.driverOverride ?? "-")" }.joined(separator: " ")
            + " holds=\(holds.keys.sorted())"
    }
}

/// Runs blocking work (processes, the blocking HTTP client) on a thread of its own: not on Swift's
/// cooperative threads (the server's handlers run there) and not on GCD's (its pool is capped at
/// 64 threads, and the daemon's change queue needs one).
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread.detachNewThread {
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
    }
}

@Suite(.serialized) struct DaemonAPITests {
    @Test func healthIs503UntilReconciledAndClaimsWait() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start(reconcile: false)
        let (s1, b1) = try await h.curl("GET", "/v1/health")
        #expect(s1 == 503 && b1.contains("\"reconciling\""))
        let (s2, b2) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-1","devices":["0000:00:03.0"]}"#)
        #expect(s2 == 503 && b2.contains("\"code\":\"reconciling\""))
        try await h.daemon.claims.reconcile()
        #expect(try await h.curl("GET", "/v1/health").0 == 200)
        await h.stop()
    }

    @Test func claimBindsWholeGroupsAndReleaseRestores() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let before = try h.hostState()
        let (s, body) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-1","devices":["05:00.1"],"idempotencyKey":"k1"}"#)
        #expect(s == 201, "\(body)")
        let claim = try JSONDecoder().decode(ClaimInfo.self, from: Data(body.utf8))
        #expect(claim.devices == ["0000:05:00.1"] && claim.groups == [5] && claim.state == "active")
        #expect(claim.members.map(\.address) == ["0000:05:00.0", "0000:05:00.1"])
        #expect(claim.members.first?.previousDriver == "e1000")
        let state = try h.hostState()
        #expect(state.contains("0000:05:00.0=vfio-pci/vfio-pci") && state.contains("0000:05:00.1=vfio-pci/vfio-pci"))
        #expect(state.contains("0000:00:1e.0=-/-"), "the bridge is left alone")
        // The same idempotency key returns the same claim; a second claim on the group is refused.
        let (s2, b2) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-1","devices":["05:00.1"],"idempotencyKey":"k1"}"#)
        let replay = try JSONDecoder().decode(ClaimInfo.self, from: Data(b2.utf8))
        #expect(s2 == 200 && replay.id == claim.id)
        let (s3, b3) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-2","devices":["0000:05:00.0"]}"#)
        #expect(s3 == 409 && b3.contains("group-taken") && b3.contains(claim.id))
        // Devices in a claim are not rebound behind its back.
        let (s4, b4) = try await h.curl("POST", "/v1/devices/0000:05:00.0/restore", "{}")
        #expect(s4 == 409 && b4.contains("device-claimed"))
        #expect(try await h.curl("GET", "/v1/claims/\(claim.id)").0 == 200)
        let (s5, b5) = try await h.curl("DELETE", "/v1/claims/\(claim.id)")
        #expect(s5 == 200 && b5.contains("\"state\":\"released\""))
        #expect(try h.hostState() == before)
        // Releasing again is harmless.
        #expect(try await h.curl("DELETE", "/v1/claims/\(claim.id)").0 == 200)
        await h.stop()
    }

    @Test func selectorClaims() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let (s, body) = try await h.curl("POST", "/v1/claims", #"{"owner":"pool-user","selector":{"vendorId":"8086","deviceId":"154c","pf":"0000:01:00.0"},"count":2}"#)
        #expect(s == 201, "\(body)")
        let claim = try JSONDecoder().decode(ClaimInfo.self, from: Data(body.utf8))
        #expect(claim.devices == ["0000:01:02.0", "0000:01:02.1"] && claim.groups == [20, 21])
        let (s2, b2) = try await h.curl("POST", "/v1/claims", #"{"owner":"x","selector":{"deviceId":"154c"},"count":1}"#)
        #expect(s2 == 409 && b2.contains("not-enough-devices"))
        #expect(try await h.curl("POST", "/v1/claims", #"{"owner":"x","selector":{"pool":"fast"},"count":1}"#).0 == 404)
        await h.stop()
    }

    @Test(arguments: [
        (#"{"owner":"x","devices":["0000:05:00.1"]"#, 400, "malformed-json"),
        (#"["not","an","object"]"#, 400, "malformed-json"),
        (#"{"owner":"x","devices":["0000:05:00.1"],"priority":1}"#, 400, "unknown-field"),
        (#"{"owner":"x","selector":{"vendor":"8086"},"count":1}"#, 400, "unknown-field"),
        (#"{"owner":"x","devices":["0000:05:00.9"]}"#, 400, "invalid-address"),
        (#"{"owner":"x","devices":["0000:7f:00.0"]}"#, 404, "device-not-found"),
        (#"{"owner":"","devices":["0000:05:00.1"]}"#, 400, "bad-request"),
        (#"{"owner":"x"}"#, 400, "bad-request"),
        (#"{"owner":"x","devices":"0000:05:00.1"}"#, 400, "invalid-field"),
        (#"{"devices":["0000:05:00.1"]}"#, 400, "missing-field"),
        (#"{"owner":"x","devices":["0000:00:1e.0"]}"#, 409, "not-assignable"),
    ])
    func badRequestsChangeNothing(body: String, status: Int, code: String) async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let before = try h.hostState()
        let (s, b) = try await h.curl("POST", "/v1/claims", body)
        #expect(s == status, "\(b)")
        #expect(b.contains("\"code\":\"\(code)\""), "\(b)")
        #expect(try h.hostState() == before)
        #expect(try h.daemon.store.claims().isEmpty)
        await h.stop()
    }

    @Test func routesMethodsAndLimits() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let (s1, b1) = try await h.curl("GET", "/v1/devices")
        let list = try JSONDecoder().decode([DeviceInfo].self, from: Data(b1.utf8))
        #expect(s1 == 200 && list.count == 10)
        let (s2, b2) = try await h.curl("GET", "/v1/devices?class=02&driver=none")
        let filtered = try JSONDecoder().decode([DeviceInfo].self, from: Data(b2.utf8))
        #expect(s2 == 200 && filtered.map(\.address) == ["0000:00:03.0", "0000:05:00.1"])
        #expect(try await h.curl("GET", "/v1/devices?colour=red").0 == 400)
        #expect(try await h.curl("GET", "/v1/devices/0000:01:00.0").1.contains("\"totalVFs\":64"))
        #expect(try await h.curl("GET", "/v1/devices/0000:7f:00.0").0 == 404)
        #expect(try await h.curl("GET", "/v1/devices/zz").0 == 400)
        #expect(try await h.curl("PUT", "/v1/claims").0 == 405)
        #expect(try await h.curl("GET", "/v2/devices").0 == 404)
        let groups = try JSONDecoder().decode([IOMMUGroupInfo].self, from: Data(try await h.curl("GET", "/v1/groups").1.utf8))
        #expect(groups.first { $0.group == 5 }?.viable == false)
        let big = "{\"owner\":\"" + String(repeating: "x", count: 70_000) + "\"}"
        let (s3, b3) = try await h.curl("POST", "/v1/claims", big)
        #expect(s3 == 413 && b3.contains("\"error\""))
        let metrics = try await h.curl("GET", "/metrics").1
        #expect(metrics.contains("passage_http_requests_total{route=\"GET /v1/devices\",status=\"200\"}"))
        #expect(metrics.contains("passage_claims{state=\"active\"} 0"))
        await h.stop()
    }

    @Test func readersMayReadButNotChange() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let before = try h.hostState()
        #expect(try await h.curl("GET", "/v1/devices", asUser: "nobody").0 == 200)
        let (s, b) = try await h.curl("POST", "/v1/claims", #"{"owner":"x","devices":["0000:00:03.0"]}"#, asUser: "nobody")
        #expect(s == 403 && b.contains("\"code\":\"forbidden\"") && b.contains("passage group"))
        #expect(try await h.curl("POST", "/v1/devices/0000:00:03.0/bind", "{}", asUser: "nobody").0 == 403)
        #expect(try h.hostState() == before)
        await h.stop()
    }

    @Test func eventsStreamClaimChanges() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        _ = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-ev","devices":["0000:00:03.0"]}"#)
        let socket = h.socket
        let lines = try await blocking { () -> [EventInfo] in
            let client = UnixHTTPClient(socketPath: socket, timeout: 5)
            var lines: [EventInfo] = []
            try client.stream("/v1/events?since=0") { line in
                if let e = try? JSONDecoder().decode(EventInfo.self, from: Data(line.utf8)) { lines.append(e) }
                return !lines.contains { $0.kind == "claim-created" }
            }
            return lines
        }
        #expect(lines.first?.kind == "reconciled")
        #expect(lines.contains { $0.kind == "claim-created" && $0.message.contains("vm-ev") })
        #expect(lines.contains { $0.kind == "device-changed" && $0.address == "0000:00:03.0" })
        await h.stop()
    }

    @Test func startUpRollsBackAClaimCutShortAndFinishesARelease() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        let before = try h.hostState()
        // A claim that died after its intent was written and one of its devices was moved.
        let dev = Store.ClaimDevice(address: "0000:05:00.0", iommuGroup: 5, previousDriver: "e1000", previousOverride: nil, requested: true)
        let dev2 = Store.ClaimDevice(address: "0000:05:00.1", iommuGroup: 5, previousDriver: nil, previousOverride: nil, requested: false)
        _ = try h.daemon.store.beginClaim(id: "c-crashed", owner: "vm", idempotencyKey: nil, request: "{}", devices: [dev, dev2], now: 1)
        _ = try DriverBinder(root: h.fixture.root, writer: h.kernel).bind(DaemonHarness.a("05:00.0"), to: "vfio-pci")
        // A release that died half-way: the claim on 00:03.0 is releasing, its device still on vfio-pci.
        let dev3 = Store.ClaimDevice(address: "0000:00:03.0", iommuGroup: 3, previousDriver: nil, previousOverride: nil, requested: true)
        let i3 = try h.daemon.store.beginClaim(id: "c-releasing", owner: "vm", idempotencyKey: nil, request: "{}", devices: [dev3], now: 2)
        try h.daemon.store.finishClaim(id: "c-releasing", intent: i3, now: 3)
        _ = try DriverBinder(root: h.fixture.root, writer: h.kernel).bind(DaemonHarness.a("00:03.0"), to: "vfio-pci")
        _ = try h.daemon.store.beginRelease(id: "c-releasing", now: 4)
        #expect(try h.hostState() != before)

        // "Restart": a new daemon over the same state.
        h.daemon = try DaemonHarness.makeDaemon(h.stateDir, h.fixture, h.kernel)
        // It serves once the unfinished work is read, before that work is done: at that moment it
        // is serving but not reconciled, and both intents are still pending.
        final class Seen: @unchecked Sendable { var count = -1; var serving = false; var ready = true; var pending = -1 }
        let seen = Seen(), claims = h.daemon.claims, store = h.daemon.store
        let report = try await h.daemon.claims.reconcile(serving: { n in
            seen.count = n; seen.serving = claims.serving; seen.ready = claims.ready
            seen.pending = (try? store.pendingIntents().count) ?? -1
        })
        #expect(seen.count == 2 && seen.serving && !seen.ready && seen.pending == 2)
        #expect(h.daemon.claims.serving && h.daemon.claims.ready)
        #expect(report.rolledBack == ["c-crashed"] && report.finished == ["c-releasing"])
        #expect(try h.daemon.store.claim(id: "c-crashed")?.state == .failed)
        #expect(try h.daemon.store.claim(id: "c-releasing")?.state == .released)
        #expect(try h.daemon.store.pendingIntents().isEmpty)
        #expect(try h.hostState() == before)
    }

    /// A VF creation cut short by SIGKILL goes back to the count the PF had; a removal cut short is finished.
    @Test func startUpUndoesAVFCreationCutShortAndFinishesARemoval() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try h.fixture.addDriver("iavf")
        StandardFixtures.teachSmallVFs(h.kernel)
        let pf = DaemonHarness.a("01:00.0")
        let numvfs = h.fixture.root.devicePath(pf) + "/sriov_numvfs"
        func count() throws -> Int { try VFManager(root: h.fixture.root, writer: h.kernel).physicalFunction(pf).sriov.numVFs }
        #expect(try count() == 2)
        // Died after the intent and after 2 → 0 → 6 VFs, before the intent was marked done.
        let payload = VFIntent(pf: pf, count: 6, previousCount: 2, previousAutoprobe: true)
        #expect(VFIntent(parsing: payload.text) == payload)
        #expect(VFIntent(parsing: "0000:01:00.0 6") == nil)
        _ = try h.daemon.store.beginIntent(kind: "vf-create", payload: payload.text, now: 1)
        try h.kernel.write("0", to: numvfs)
        try h.kernel.write("6", to: numvfs)
        #expect(try count() == 6)

        h.daemon = try DaemonHarness.makeDaemon(h.stateDir, h.fixture, h.kernel)
        let report = try await h.daemon.claims.reconcile()
        #expect(report.rolledBack.count == 1 && report.finished.isEmpty)
        #expect(try count() == 2)
        #expect(try h.daemon.store.pendingIntents().isEmpty)
        #expect(try h.daemon.inventory.current().devices.filter { $0.physfn == pf }.count == 2)

        // A removal that died before sriov_numvfs was written: finished at start-up.
        _ = try h.daemon.store.beginIntent(kind: "vf-remove", payload: VFIntent(pf: pf, count: 0, previousCount: 2, previousAutoprobe: nil).text, now: 2)
        h.daemon = try DaemonHarness.makeDaemon(h.stateDir, h.fixture, h.kernel)
        let report2 = try await h.daemon.claims.reconcile()
        #expect(report2.finished.count == 1 && report2.rolledBack.isEmpty)
        #expect(try count() == 0)
        #expect(try h.daemon.store.pendingIntents().isEmpty)
    }

    /// The hot-plug path on the fixture: functions that vanish outside Passage are noticed, and an
    /// active claim on them becomes lost (with an event); ones that change are patched.
    @Test func hotplugMarksClaimsOnVanishedDevicesLost() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let (st, body) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-1","devices":["0000:00:03.0"]}"#)
        #expect(st == 201)
        let id = try #require(try h.json(body)["id"] as? String)
        let stream = h.daemon.events.subscribe(since: 0)
        h.fixture.removeDevice(DaemonHarness.a("00:03.0"))
        try await h.daemon.claims.applyHotplug(addresses: nil)
        #expect(try h.daemon.store.claim(id: id)?.state == .lost)
        var kinds: [String] = []
        for await e in stream {
            kinds.append(e.kind)
            if e.kind == "claim-lost" { break }
        }
        #expect(kinds.contains("device-vanished") && kinds.last == "claim-lost")
        // A lost claim can still be released (nothing to restore for the missing device).
        #expect(try await h.curl("DELETE", "/v1/claims/\(id)").0 == 200)
        await h.stop()
    }

    /// `passage bind/restore/vf` go through a running daemon (which writes through the simulated
    /// kernel here: a driver that moves proves the daemon did it, since the CLI's own writer would
    /// only write files), respect its claims, show operation progress; a missing or mismatched
    /// daemon named explicitly is an error.
    @Test func cliChangesGoThroughTheDaemon() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try h.fixture.addDriver("iavf")
        StandardFixtures.teachSmallVFs(h.kernel)
        try await h.start()
        let passage = try passageBinary()
        let root = h.fixture.root.path
        func cli(_ args: [String], socket: String? = nil, sysfsRoot: String? = nil) async throws -> ProcessResult {
            try await blocking { try runProcess(passage, args + ["--sysfs-root", sysfsRoot ?? root, "--socket", socket ?? h.socket]) }
        }
        func driver(_ a: String) throws -> String? { try PCIInventory(root: h.fixture.root, lookUpNames: false).device(DaemonHarness.a(a)).driver }

        let bound = try await cli(["bind", "0000:05:00.0", "--group", "--json"])
        #expect(bound.status == 0, "\(bound.stderr)")
        #expect(try driver("05:00.0") == "vfio-pci" && driver("05:00.1") == "vfio-pci")
        let info = try JSONDecoder().decode(BindResultInfo.self, from: bound.stdout)
        #expect(info.devices.map(\.address) == ["0000:05:00.0", "0000:05:00.1"] && info.devices.allSatisfy(\.changed))
        let restored = try await cli(["restore", "0000:05:00.0", "0000:05:00.1"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try driver("05:00.0") == "e1000" && driver("05:00.1") == "e1000")

        // A claimed device: the daemon refuses, the CLI says why, nothing moves.
        let (st, body) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-1","devices":["0000:00:03.0"]}"#)
        #expect(st == 201)
        let id = try #require(try h.json(body)["id"] as? String)
        let before = try h.hostState()
        let refused = try await cli(["restore", "0000:00:03.0"])
        #expect(refused.status != 0 && refused.stderr.contains(id), "\(refused.stderr)")
        #expect(try h.hostState() == before)

        // VF creation as a daemon operation, with progress lines.
        let created = try await cli(["vf", "create", "0000:01:00.0", "--count", "3", "--driver", "vfio-pci"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.text.components(separatedBy: "\n").filter { $0.hasPrefix("VF ") && $0.contains("ready on vfio-pci") }.count == 3, "\(created.text)")
        #expect(try h.daemon.inventory.current().devices.filter { $0.physfn == DaemonHarness.a("01:00.0") && $0.driver == "vfio-pci" }.count == 3)
        let removed = try await cli(["vf", "remove", "0000:01:00.0", "--json"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(try VFManager(root: h.fixture.root, writer: h.kernel).physicalFunction(DaemonHarness.a("01:00.0")).sriov.numVFs == 0)

        // Named explicitly but absent, or managing another tree: errors, no local fallback.
        let absent = try await cli(["bind", "0000:05:00.0"], socket: root + ".nothing")
        #expect(absent.status == 69 && absent.stderr.contains("nothing answers"), "\(absent.stderr)")
        let other = try await cli(["bind", "0000:05:00.0"], sysfsRoot: root + "/bus/..")
        #expect(other.status == 64 && other.stderr.contains("manages"), "\(other.stderr)")
        #expect(try driver("05:00.0") == "e1000")
        await h.stop()
    }

    /// The device list carries an ETag; If-None-Match with it answers 304 until the inventory
    /// changes; pages follow the address order with a Link to the next one.
    @Test func deviceListRevalidationAndPages() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let (st, headers) = try await h.curl("GET", "/v1/devices", extra: ["-D", "-", "-o", "/dev/null"])
        #expect(st == 200)
        let tag = try #require(headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("etag:") }.map { String($0.dropFirst(5)).trimmingCharacters(in: .whitespaces) })
        let (s304, b304) = try await h.curl("GET", "/v1/devices", extra: ["-H", "If-None-Match: \(tag)"])
        #expect(s304 == 304 && b304.isEmpty)
        #expect(try await h.curl("GET", "/v1/devices?class=02", extra: ["-H", "If-None-Match: \(tag)"]).0 == 304)
        #expect(try await h.curl("GET", "/v1/devices", extra: ["-H", "If-None-Match: \"other\""]).0 == 200)
        // A change: the old tag no longer matches.
        #expect(try await h.curl("POST", "/v1/devices/0000:05:00.0/bind", #"{"group":true}"#).0 == 200)
        #expect(try await h.curl("GET", "/v1/devices", extra: ["-H", "If-None-Match: \(tag)"]).0 == 200)

        // Pages of 3 walk every device once, in order, by following Link.
        let all = try JSONDecoder().decode([DeviceInfo].self, from: Data(try await h.curl("GET", "/v1/devices").1.utf8)).map(\.address)
        var seen: [String] = []
        var next: String? = "/v1/devices?limit=3"
        while let path = next {
            let (s, text) = try await h.curl("GET", path, extra: ["-D", "/dev/stderr"])
            #expect(s == 200)
            let page = try JSONDecoder().decode([DeviceInfo].self, from: Data(text.utf8)).map(\.address)
            #expect(page.count <= 3)
            seen += page
            next = page.count == 3 && seen.count < all.count ? "/v1/devices?after=\(page.last!)&limit=3" : nil
        }
        #expect(seen == all)
        // Lists and pages are copied out of the list encoded once per snapshot: byte for byte what
        // encoding the chosen devices gives.
        let wire = try h.daemon.inventory.current().wire
        func encoded(_ ds: [DeviceInfo]) throws -> String { String(decoding: try StreamingJSONEncoder(pretty: false).encode(ds) + [0x0A], as: UTF8.self) }
        #expect(try await h.curl("GET", "/v1/devices").1 == encoded(wire))
        #expect(try await h.curl("GET", "/v1/devices?class=02").1 == encoded(wire.filter { $0.classCode.hasPrefix("02") }))
        #expect(try await h.curl("GET", "/v1/devices?after=\(all[1])&limit=2").1 == encoded(Array(wire[2..<4])))
        #expect(try await h.curl("GET", "/v1/devices?vendor=ffff").1 == "[]\n")
        let (sl, hl) = try await h.curl("GET", "/v1/devices?limit=2", extra: ["-D", "-", "-o", "/dev/null"])
        #expect(sl == 200 && hl.contains("Link: </v1/devices?after=\(all[1])&limit=2>; rel=\"next\""), "\(hl)")
        for bad in ["limit=0", "limit=x", "after=zz:00.0", "limit=100001"] {
            let (sb, bb) = try await h.curl("GET", "/v1/devices?" + bad)
            #expect(sb == 400 && bb.contains("bad-request"), "\(bad): \(bb)")
        }
        await h.stop()
    }

    /// Pools: defined over the API (and the CLI), shown with members and free counts, drawn from
    /// by claims; bad names and selectors change nothing.
    @Test func poolsAreNamedSelectorsClaimsDrawFrom() async throws {
        let h = try DaemonHarness(extraGroups: 3)
        defer { h.cleanup() }
        try await h.start()
        let (s1, b1) = try await h.curl("PUT", "/v1/pools/e1000e-nics", #"{"selector":{"vendorId":"8086","deviceId":"10d3"}}"#)
        #expect(s1 == 201, "\(b1)")
        var pool = try JSONDecoder().decode(PoolInfo.self, from: Data(b1.utf8))
        #expect(pool.members == ["0000:10:00.0", "0000:10:01.0", "0000:10:02.0"] && pool.free == 3 && pool.source == "api")
        #expect(try await h.curl("PUT", "/v1/pools/e1000e-nics", #"{"selector":{"vendorId":"8086","deviceId":"10d3","numaNode":7}}"#).0 == 200)
        #expect(try await h.curl("PUT", "/v1/pools/e1000e-nics", #"{"selector":{"vendorId":"8086","deviceId":"10d3"}}"#).0 == 200)

        let (s2, b2) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-1","selector":{"pool":"e1000e-nics"},"count":2}"#)
        #expect(s2 == 201, "\(b2)")
        pool = try JSONDecoder().decode(PoolInfo.self, from: Data(try await h.curl("GET", "/v1/pools/e1000e-nics").1.utf8))
        #expect(pool.free == 1 && pool.claimed == 2)
        let (s3, b3) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-2","selector":{"pool":"e1000e-nics"},"count":2}"#)
        #expect(s3 == 409 && b3.contains("not-enough-devices"))
        // A pool narrowed further by the request's own fields.
        #expect(try await h.curl("POST", "/v1/claims", #"{"owner":"vm-3","selector":{"pool":"e1000e-nics","numaNode":7},"count":1}"#).0 == 409)

        let before = try h.hostState()
        for (path, body, code) in [
            ("/v1/pools/Bad%20Name", #"{"selector":{"vendorId":"8086"}}"#, "bad-request"),
            ("/v1/pools/x", #"{"selector":{}}"#, "bad-request"),
            ("/v1/pools/x", #"{"selector":{"pool":"e1000e-nics"}}"#, "bad-request"),
            ("/v1/pools/x", #"{"selector":{"vendorId":"80861"}}"#, "bad-request"),
            ("/v1/pools/x", #"{"selector":{"vendorId":"8086"},"extra":1}"#, "unknown-field"),
        ] {
            let (st, b) = try await h.curl("PUT", path, body)
            #expect(st == 400 && b.contains(code), "\(path) \(body): \(st) \(b)")
        }
        #expect(try await h.curl("POST", "/v1/claims", #"{"owner":"x","selector":{"pool":"nope"},"count":1}"#).0 == 404)
        #expect(try h.hostState() == before)
        #expect(try h.daemon.store.pools().map(\.name) == ["e1000e-nics"])

        // The CLI: define, list, delete.
        let passage = try passageBinary()
        let defined = try await blocking { try runProcess(passage, ["pools", "define", "virtio", "--vendor", "1af4", "--socket", h.socket, "--json"]) }
        #expect(defined.status == 0, "\(defined.stderr)")
        let listed = try await blocking { try runProcess(passage, ["pools", "--socket", h.socket]) }
        #expect(listed.status == 0 && listed.text.contains("e1000e-nics") && listed.text.contains("virtio"), "\(listed.text)")
        let deleted = try await blocking { try runProcess(passage, ["pools", "delete", "virtio", "--socket", h.socket]) }
        #expect(deleted.status == 0)
        #expect(try await h.curl("GET", "/v1/pools/virtio").0 == 404)
        #expect(try await h.curl("DELETE", "/v1/pools/virtio").0 == 404)
        await h.stop()
    }

    /// 64 clients race to claim and release 8 single-function groups: never two holders of a group,
    /// and afterwards the store matches sysfs.
    @Test func racingClientsNeverShareAGroup() async throws {
        let h = try DaemonHarness(extraGroups: 8)
        defer { h.cleanup() }
        try await h.start()
        let before = try h.hostState()
        let targets = (0..<8).map { "0000:10:\(hex($0, 2)).0" }
        let clients = 64, rounds = Int(ProcessInfo.processInfo.environment["PASSAGE_RACE_ROUNDS"] ?? "40") ?? 40
        let socket = h.socket
        let results = await withTaskGroup(of: (Int, Int).self) { group in
            for c in 0..<clients {
                group.addTask { (try? await blocking { () -> (Int, Int) in
                    let client = UnixHTTPClient(socketPath: socket)
                    var ok = 0, refused = 0
                    for r in 0..<rounds {
                        let target = targets[(c + r) % targets.count]
                        guard let resp = try? client.request("POST", "/v1/claims", body: Array(#"{"owner":"c\#(c)","devices":["\#(target)"]}"#.utf8)) else { continue }
                        if resp.status == 201, let claim = try? JSONDecoder().decode(ClaimInfo.self, from: Data(resp.body)) {
                            ok += 1
                            _ = try? client.request("DELETE", "/v1/claims/\(claim.id)")
                        } else if resp.status == 409 {
                            refused += 1
                            if refused == 1 && c == 0 { print("race: first refusal: \(resp.text)") }
                        } else {
                            print("race: unexpected \(resp.status): \(resp.text)")
                        }
                    }
                    return (ok, refused)
                }) ?? (0, 0) }
            }
            var total = (0, 0)
            for await r in group { total.0 += r.0; total.1 += r.1 }
            return total
        }
        #expect(results.0 + results.1 == clients * rounds, "every request got 201 or 409")
        #expect(results.0 > 0)
        // Replay the serialized history: a group is never created for a second holder before its release.
        let claims = try h.daemon.store.claims()
        let groupsOf = Dictionary(uniqueKeysWithValues: claims.map { ($0.id, $0.groups) })
        var holder: [Int: String] = [:]
        print("race: \(clients) clients × \(rounds) rounds: \(results.0) claims made and released, \(results.1) refused with 409")
        let events = h.daemon.events.kept
        for e in events where e.kind == "claim-created" || e.kind == "claim-released" {
            let id = e.claimId!
            for g in groupsOf[id] ?? [] {
                if e.kind == "claim-created" {
                    #expect(holder[g] == nil, "group \(g) given to \(id) while \(holder[g] ?? "") held it")
                    holder[g] = id
                } else {
                    holder[g] = nil
                }
            }
        }
        #expect(claims.filter { $0.state == .released }.count == results.0)
        #expect(try h.daemon.store.groupHolds().isEmpty)
        #expect(try h.daemon.store.pendingIntents().isEmpty)
        #expect(try h.hostState() == before)
        await h.stop()
    }
}

/// docs/api/openapi.json against the real server: every documented route exists (no "no route" 404,
/// no 405), and routes that are not documented do not.
@Suite(.serialized) struct OpenAPIRoutesTests {
    static func repoRoot() -> URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test func everyDocumentedRouteIsServedAndNothingElse() async throws {
        let spec = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.repoRoot().appendingPathComponent("docs/api/openapi.json"))) as? [String: Any])
        let paths = try #require(spec["paths"] as? [String: [String: Any]])
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let samples = ["{address}": "0000:00:03.0", "{pf}": "0000:01:00.0", "{id}": "c-000000000000"]
        var checked = 0
        for (template, operations) in paths.sorted(by: { $0.key < $1.key }) {
            var path = template
            for (k, v) in samples { path = path.replacingOccurrences(of: k, with: v) }
            for method in operations.keys.sorted() where ["get", "post", "delete", "put", "patch"].contains(method) {
                if template == "/v1/events" { continue }  // a stream: checked in eventsStreamClaimChanges
                // Bodies that are refused before anything happens, so the route is probed without changing the host.
                let body: String? = method == "get" || method == "delete" ? nil : #"{"unknownProbeField": 1}"#
                let (status, text) = try await h.curl(method.uppercased(), path, body)
                #expect(status != 405, "\(method.uppercased()) \(template) is documented but not allowed")
                #expect(!text.contains("no route"), "\(method.uppercased()) \(template) is documented but not served")
                checked += 1
            }
        }
        #expect(checked >= 15)
        for (method, path) in [("GET", "/v1/snapshots"), ("GET", "/v1/devices/0000:00:03.0/config"), ("POST", "/v1/health"), ("GET", "/v2/devices")] {
            let (status, _) = try await h.curl(method, path, method == "POST" ? "{}" : nil)
            #expect(status == 404 || status == 405, "\(method) \(path) is served but not documented")
        }
        await h.stop()
    }
}
