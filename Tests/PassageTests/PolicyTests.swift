import Foundation
import Testing
@testable import HostPCI
import PassageAPI
@testable import PassageDaemon
import SRIOV
import SysfsFixtures

/// The policy file: parsing with file/line/field errors, and the plan against fixture trees.
@Suite struct PolicyParsingTests {
    static let example = """
        # Two PFs and a pool.
        [[pf]]
        name = "nvme"
        match = { address = "0000:01:00.0" }
        vfs = 4
        vf_driver = "vfio-pci"
        nvme = { queues = 2, interrupts = 1 }

        [[pf]]
        match.vendor = "8086"
        match.device = "1572"
        match.interface = "ens1f0"
        vfs = 2
        [[pf.vf]]
        index = 1
        mac = "52:54:00:12:34:56"
        vlan = 100
        trust = true
        spoofchk = false

        [[pool]]
        name = "nvme-vfs"
        pf = "0000:01:00.0"
        """

    @Test func parsesTheDocumentedShape() throws {
        let p = try Policy.parse(Self.example, file: "p.toml")
        #expect(p.pfs.count == 2 && p.pools.count == 1)
        #expect(p.pfs[0].name == "nvme" && p.pfs[0].match.address?.description == "0000:01:00.0" && p.pfs[0].vfs == 4)
        #expect(p.pfs[0].vfDriver == .vfio && p.pfs[0].nvmeQueues == 2 && p.pfs[0].nvmeInterrupts == 1 && p.pfs[0].line == 2)
        #expect(p.pfs[1].match.vendorID == 0x8086 && p.pfs[1].match.deviceID == 0x1572 && p.pfs[1].match.interface == "ens1f0")
        #expect(p.pfs[1].vfDriver == .host && p.pfs[1].label == "pf rule at line 9")
        let link = try #require(p.pfs[1].links[1])
        #expect(link.mac?.description == "52:54:00:12:34:56" && link.vlan == 100 && link.trust == true && link.spoofCheck == false)
        #expect(p.pools[0].name == "nvme-vfs" && p.pools[0].selector.pf == "0000:01:00.0")
    }

    @Test func theCommentedExampleInTheDocsParses() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/passage.toml.example")
        let p = try Policy.parse(try String(contentsOf: url, encoding: .utf8), file: url.path)
        #expect(!p.pfs.isEmpty && !p.pools.isEmpty)
    }

    @Test(arguments: [
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\ncolour = \"red\"\n", 4, "pf[0].colour", "unknown key"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = \"two\"\n", 3, "pf[0].vfs", "expected an integer"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 5000\n", 3, "pf[0].vfs", "out of range"),
        ("[[pf]]\nmatch = { address = \"0000:01:20.0\" }\nvfs = 2\n", 2, "pf[0].match.address", "device"),
        ("[[pf]]\nvfs = 2\n", 1, "pf[0].match", "needs match"),
        ("[[pf]]\nmatch = { }\nvfs = 2\n", 2, "pf[0].match", "every PF"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\n", 1, "pf[0].vfs", "missing"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\nvf_driver = \"igb\"\n", 4, "pf[0].vf_driver", "vfio-pci"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\nnvme = { queues = 2 }\n", 4, "pf[0].nvme", "both"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\n[[pf.vf]]\nindex = 2\n", 5, "pf[0].vf[0].index", "does not exist"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\n[[pf.vf]]\nindex = 0\nmac = \"nope\"\n", 6, "pf[0].vf[0].mac", "MAC"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\n[[pf.vf]]\nindex = 0\nqos = 3\n", 4, "pf[0].vf[0]", "VLAN"),
        ("[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\n[[pf]]\nmatch = { address = \"01:00.0\" }\nvfs = 1\n", 4, "pf.match.address", "already matched"),
        ("[[pool]]\nname = \"a\"\npf = \"0000:01:00.0\"\n[[pool]]\nname = \"a\"\nvendor = \"8086\"\n", 5, "pool.name", "already defined"),
        ("[[pool]]\nname = \"Bad Name\"\nvendor = \"8086\"\n", 2, "pool.name", "a-z"),
        ("[[pool]]\nname = \"x\"\n", 1, "pool", "at least one"),
        ("[pf]\nvfs = 1\n", 1, "pf", "expected [[pf]]"),
        ("vfs = 1\n", 1, "vfs", "unknown key"),
    ])
    func errorsNameFileLineAndField(_ text: String, line: Int, field: String, words: String) {
        #expect(throws: PolicyError.self) { try Policy.parse(text, file: "/etc/passage/passage.toml") }
        do {
            _ = try Policy.parse(text, file: "/etc/passage/passage.toml")
        } catch {
            #expect(error.line == line && error.field == field && error.message.contains(words), "\(error)")
            #expect(error.description.hasPrefix("/etc/passage/passage.toml:\(line): \(field): "))
        }
    }

    @Test(arguments: [
        ("a = \"unterminated\n", 1, "unterminated"),
        ("a = 1\na = 2\n", 2, "already set"),
        ("[t]\n[t]\n", 2, "defined twice"),
        ("a = 1.5\n", 1, "not a value"),
        ("a = [1, 2\n", 2, "expected"),
        ("= 3\n", 1, "expected a key"),
        ("a = 1 b = 2\n", 1, "after the value"),
    ])
    func tomlSyntaxErrorsHaveLines(_ text: String, line: Int, words: String) {
        do {
            _ = try TOMLParser.parse(text)
            Issue.record("\(text.debugDescription) parsed")
        } catch {
            #expect(error.line == line && error.message.contains(words), "\(error)")
        }
    }

    @Test func tomlValues() throws {
        let t = try TOMLParser.parse("""
            # comment
            s = "a\\"b" # trailing
            l = 'C:\\path'
            n = 0x10
            m = 1_000
            b = false
            arr = [
              "x", # one
              "y",
            ]
            [x.y]
            z = { k = 1, j = "v" }
            [[q]]
            a = 1
            [[q]]
            a = 2
            """)
        #expect(t["s"]?.value == .string("a\"b") && t["l"]?.value == .string("C:\\path") && t["n"]?.value == .integer(16))
        #expect(t["m"]?.value == .integer(1000) && t["b"]?.value == .boolean(false))
        guard case .array(let arr)? = t["arr"]?.value, case .table(let x)? = t["x"]?.value, case .table(let y)? = x["y"]?.value,
              case .table(let z)? = y["z"]?.value, case .array(let q)? = t["q"]?.value else {
            Issue.record("shape"); return
        }
        #expect(arr.map(\.value) == [.string("x"), .string("y")] && arr[1].line == 9)
        #expect(z["k"]?.value == .integer(1) && z["j"]?.value == .string("v") && q.count == 2)
    }
}

/// The plan and convergence on the small fixture through a simulated kernel.
@Suite(.serialized) struct PolicyConvergenceTests {
    func harness() throws -> DaemonHarness {
        let h = try DaemonHarness()
        try h.fixture.addDriver("iavf")
        StandardFixtures.teachSmallVFs(h.kernel)
        return h
    }

    func policy(_ h: DaemonHarness, _ text: String) throws -> PolicyState {
        let path = h.stateDir + ".policy.toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return PolicyState(path: path)
    }

    @Test func convergesIdempotentlyAndTouchesOnlyNamedPFs() async throws {
        let h = try harness()
        defer { h.cleanup() }
        try await h.daemon.claims.reconcile()
        let state = try policy(h, """
            [[pf]]
            name = "i40e"
            match = { vendor = "8086", device = "1572" }
            vfs = 4
            vf_driver = "vfio-pci"
            [[pf]]
            name = "absent"
            match = { address = "0000:7f:00.0" }
            vfs = 1
            [[pool]]
            name = "i40e-vfs"
            pf = "0000:01:00.0"
            """)
        let p = try h.daemon.claims.reloadPolicy(state)
        let plan = try h.daemon.claims.planPolicy(p)
        #expect(plan.map(\.action) == ["create-vfs", "absent"], "\(plan)")
        h.kernel.writesReset()
        let events = h.daemon.events.subscribe(since: nil)
        let done = await h.daemon.claims.converge(p, state: state)
        #expect(done.first?.outcome == "done", "\(done)")
        let vfs = try h.daemon.inventory.current().devices.filter { $0.physfn == DaemonHarness.a("01:00.0") }
        #expect(vfs.count == 4 && vfs.allSatisfy { $0.driver == "vfio-pci" })
        // Nothing outside the PF and its VFs was written.
        // (Paths of the simulated kernel's log are relative to the root; driver-directory writes carry the address.)
        func rel(_ p: String) -> String { String(p.dropFirst(h.fixture.root.path.count + 1)) }
        let ours = [DaemonHarness.a("01:00.0")] + vfs.map(\.address)
        let stray = h.kernel.writes.filter { w in
            !ours.contains { w.path.hasPrefix(rel(h.fixture.root.devicePath($0))) || w.value == $0.description }
        }
        #expect(stray.isEmpty, "\(stray)")
        // The pool from the policy is there, with the 4 VFs free, and a pool-ready event came.
        let pool = try h.daemon.claims.poolInfo(try #require(try h.daemon.store.pools().first { $0.name == "i40e-vfs" }))
        #expect(pool.source == "policy" && pool.members.count == 4 && pool.free == 4)
        var kinds: [String] = []
        for await e in events { kinds.append(e.kind); if e.kind == "pool-ready" { break } }
        #expect(kinds.contains("policy-step") && kinds.contains("pool-ready"))

        // Again: nothing to do, no write.
        h.kernel.writesReset()
        let again = await h.daemon.claims.converge(p, state: state)
        #expect(again.first?.action == "ok" && h.kernel.writes.isEmpty, "\(again) \(h.kernel.writes)")

        // Half-satisfied (a VF moved off vfio-pci behind its back): only that VF is bound again.
        let vf2 = vfs[2].address
        _ = try DriverBinder(root: h.fixture.root, writer: h.kernel).restore(vf2, to: "iavf")
        _ = try h.daemon.inventory.refresh([vf2])
        let repaired = await h.daemon.claims.converge(p, state: state)
        #expect(repaired.first?.action == "bind-vfs" && repaired.first?.devices == [vf2.description] && repaired.first?.outcome == "done")
        #expect(try driver(h, vf2) == "vfio-pci")
    }

    /// A PF two rules match is governed by the first: the second is reported and never carried out.
    @Test func aPFMatchedByTwoRulesFollowsTheFirst() async throws {
        let h = try harness()
        defer { h.cleanup() }
        try await h.daemon.claims.reconcile()
        let state = try policy(h, """
            [[pf]]
            name = "first"
            match = { address = "0000:01:00.0" }
            vfs = 3
            vf_driver = "vfio-pci"
            [[pf]]
            name = "second"
            match = { vendor = "8086", device = "1572" }
            vfs = 1
            """)
        let p = try h.daemon.claims.reloadPolicy(state)
        let steps = await h.daemon.claims.converge(p, state: state)
        #expect(steps.map(\.action) == ["create-vfs", "skipped"], "\(steps)")
        #expect(steps.last?.detail.contains("already governed by first") == true && steps.last?.outcome == nil)
        #expect(try VFManager(root: h.fixture.root, writer: h.kernel).physicalFunction(DaemonHarness.a("01:00.0")).sriov.numVFs == 3)
        let again = await h.daemon.claims.converge(p, state: state)
        #expect(again.map(\.action) == ["ok", "skipped"], "\(again)")
    }

    @Test func claimedVFsKeepTheirCountAndABadReloadKeepsTheOldPolicy() async throws {
        let h = try harness()
        defer { h.cleanup() }
        try await h.daemon.claims.reconcile()
        let state = try policy(h, "[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 2\nvf_driver = \"vfio-pci\"\n")
        let p = try h.daemon.claims.reloadPolicy(state)
        _ = await h.daemon.claims.converge(p, state: state)
        let (claim, _) = try await h.daemon.claims.create(ClaimRequest(owner: "vm", devices: ["0000:01:02.0"]))
        #expect(claim.state == .active)

        // The file now wants 3 VFs: not while one is claimed.
        try "[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 3\n".write(toFile: state.path, atomically: true, encoding: .utf8)
        let p3 = try h.daemon.claims.reloadPolicy(state)
        h.kernel.writesReset()
        let steps = await h.daemon.claims.converge(p3, state: state)
        #expect(steps.first?.action == "skipped" && steps.first?.detail.contains(claim.id) == true, "\(steps)")
        #expect(h.kernel.writes.isEmpty)

        // A broken file: refused with file:line, the policy in force stays.
        try "[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = x\n".write(toFile: state.path, atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try h.daemon.claims.reloadPolicy(state) }
        #expect(state.policy == p3)
        #expect(state.rejected?.contains("\(state.path):3:") == true, "\(state.rejected ?? "-")")
    }

    @Test func reloadAndDryRunOverTheAPI() async throws {
        let h = try harness()
        defer { h.cleanup() }
        let path = h.stateDir + ".policy.toml"
        try "[[pf]]\nmatch = { address = \"0000:01:00.0\" }\nvfs = 3\nvf_driver = \"vfio-pci\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        h.daemon = try Daemon(stateDirectory: h.stateDir, root: h.fixture.root, writer: h.kernel,
                              usage: HostUsage(root: h.fixture.root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }),
                              policyPath: path)
        try await h.start()
        let (s1, b1) = try await h.curl("POST", "/v1/policy/apply", #"{"dryRun":true}"#)
        #expect(s1 == 200 && b1.contains("\"create-vfs\""), "\(b1)")
        #expect(try VFManager(root: h.fixture.root, writer: h.kernel).physicalFunction(DaemonHarness.a("01:00.0")).sriov.numVFs == 2)
        let (s2, b2) = try await h.curl("POST", "/v1/policy/reload")
        #expect(s2 == 200 && b2.contains("\"outcome\":\"done\""), "\(b2)")
        #expect(try VFManager(root: h.fixture.root, writer: h.kernel).physicalFunction(DaemonHarness.a("01:00.0")).sriov.numVFs == 3)
        let (s3, b3) = try await h.curl("GET", "/v1/policy")
        #expect(s3 == 200 && b3.contains("\"action\":\"ok\"") && b3.contains("\"present\":true"), "\(b3)")
        try "[[pf]]\nvfs = 3\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (s4, b4) = try await h.curl("POST", "/v1/policy/reload")
        #expect(s4 == 422 && b4.contains("policy-invalid") && b4.contains("\(path):1:"), "\(b4)")
        #expect(try await h.curl("POST", "/v1/policy/reload", asUser: "nobody").0 == 403)
        await h.stop()
    }

    func driver(_ h: DaemonHarness, _ a: PCIAddress) throws -> String? {
        try PCIInventory(root: h.fixture.root, lookUpNames: false).device(a).driver
    }
}
