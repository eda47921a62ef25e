import Foundation
import Testing
import SysfsFixtures
import HostPCI
import PassageAPI
@testable import PassageDaemon

/// VMs through the daemon: the real passage-vmm (built next to the test binaries) on this
/// machine's /dev/kvm, booting tiny synthetic bzImages, driven over the real socket with curl.
@Suite(.serialized) struct VMSupervisorTests {
    /// 64-bit entry code that prints `text` on COM1, then resets through the i8042 (or halts forever).
    static func image(printing text: String, thenReset: Bool) -> [UInt8] {
        SyntheticKernel.printing(text, thenReset: thenReset)
    }

    func harness() throws -> (DaemonHarness, String) {
        let h = try DaemonHarness()
        let vmm = URL(fileURLWithPath: try passageBinary()).deletingLastPathComponent().appendingPathComponent("passage-vmm").path
        h.daemon = try Daemon(stateDirectory: h.stateDir, root: h.fixture.root, writer: h.kernel,
                              usage: HostUsage(root: h.fixture.root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }),
                              policyPath: h.stateDir + ".no-policy", vmmPath: vmm)
        return (h, vmm)
    }

    func waitState(_ h: DaemonHarness, _ name: String, _ state: String, seconds: Double = 20) async throws -> VMInfo {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let (_, body) = try await h.curl("GET", "/v1/vms/\(name)")
            let vm = try JSONDecoder().decode(VMInfo.self, from: Data(body.utf8))
            if vm.state == state || Date() > deadline { return vm }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test func startRunsTheVMMAndFollowsItToTheEnd() async throws {
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { Issue.record("this test needs /dev/kvm"); return }
        let (h, _) = try harness()
        defer { h.cleanup() }
        try await h.start()
        let kernel = try tempFile("vm-ok", Self.image(printing: "HELLO\n", thenReset: true))
        defer { unlink(kernel) }
        let (st, body) = try await h.curl("POST", "/v1/vms", #"{"name":"vm-ok","kernel":"\#(kernel)","memory":"32M"}"#)
        #expect(st == 201, "\(body)")
        let vm = try await waitState(h, "vm-ok", "stopped")
        #expect(vm.state == "stopped" && vm.exitStatus == 0, "\(vm)")
        #expect(try await h.curl("GET", "/v1/vms/vm-ok/console").1 == "HELLO\n")
        let events = try await h.curl("GET", "/v1/events?since=0", extra: ["-m", "1"]).1
        #expect(events.contains("\"vm-started\"") && events.contains("\"vm-stopped\""))
        await h.stop()
    }

    /// Two starts of one VM at once: one VMM, one record — the other request is refused (409,
    /// vm-starting while the first is in progress or vm-running after), never a second VMM that
    /// would overwrite the first's record.
    @Test func concurrentStartsOfOneVMSpawnOneVMM() async throws {
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { Issue.record("this test needs /dev/kvm"); return }
        let (h, _) = try harness()
        defer { h.cleanup() }
        try await h.start()
        let kernel = try tempFile("vm-twice", Self.image(printing: "UP\n", thenReset: false))
        defer { unlink(kernel) }
        let body = #"{"name":"vm-twice","kernel":"\#(kernel)","memory":"32M"}"#
        for round in 0..<3 {
            async let a = h.curl("POST", "/v1/vms", body)
            async let b = h.curl("POST", "/v1/vms", body)
            let results = try await [a, b]
            let statuses = results.map(\.0).sorted()
            #expect(statuses == [201, 409], "round \(round): \(results)")
            #expect(results.contains { $0.1.contains("vm-starting") || $0.1.contains("vm-running") })
            let vmms = (try FileManager.default.contentsOfDirectory(atPath: "/proc")).compactMap(Int32.init)
                .filter { VMSupervisor.isVMM($0, console: h.daemon.vms.consolePath("vm-twice")) }
            #expect(vmms.count == 1, "round \(round): passage-vmm processes of vm-twice: \(vmms)")
            #expect(try await h.curl("POST", "/v1/vms/vm-twice/stop").0 == 200)
            _ = try await waitState(h, "vm-twice", "stopped")
        }
        await h.stop()
    }

    /// passaged killed inside `vm start` (the record written, the pid not yet): the restart must
    /// find the VMM by its console path, not lose track of it (its claim would be releasable
    /// under it) — and must not take another VM's VMM, or a dead one, for it.
    @Test func aRestartDuringAStartFindsTheVMMByItsConsole() async throws {
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { Issue.record("this test needs /dev/kvm"); return }
        let (h, vmm) = try harness()
        defer { h.cleanup() }
        try await h.start()
        let kernel = try tempFile("vm-orphan", Self.image(printing: "ORPHAN\n", thenReset: false))
        defer { unlink(kernel) }
        let supervisor = h.daemon.vms
        let console = supervisor.consolePath("vm-orphan")
        try FileManager.default.createDirectory(atPath: (console as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let orphan = Process()
        orphan.executableURL = URL(fileURLWithPath: vmm)
        orphan.arguments = ["--kernel", kernel, "--memory", "32M", "--console", "file:" + console]
        try orphan.run()
        defer { if orphan.isRunning { orphan.terminate() } }
        func record(_ name: String, pid: Int32?) -> Store.VMRecord {
            Store.VMRecord(name: name, config: "{}", claimID: nil, state: "running", pid: pid, exitStatus: nil, message: nil,
                           startedAt: ClaimService.now(), endedAt: nil)
        }
        try h.daemon.store.putVM(record("vm-orphan", pid: nil))                     // died before learning the pid
        try h.daemon.store.putVM(record("vm-gone", pid: nil))                       // died before the VMM ran
        try h.daemon.store.putVM(record("vm-other", pid: orphan.processIdentifier)) // its pid now another VM's VMM
        for _ in 0..<50 where !FileManager.default.fileExists(atPath: "/proc/\(orphan.processIdentifier)/cmdline") { usleep(20_000) }
        supervisor.adopt()
        let byName = Dictionary(uniqueKeysWithValues: try h.daemon.store.vms().map { ($0.name, $0) })
        #expect(byName["vm-orphan"]?.state == "running" && byName["vm-orphan"]?.pid == orphan.processIdentifier)
        #expect(byName["vm-gone"]?.state == "stopped" && byName["vm-gone"]?.message?.contains("passaged stopped while starting it") == true)
        #expect(byName["vm-other"]?.state == "stopped", "a pid running another VM's console is not this VM's VMM")
        // Adopted means followed: stopping it through the API ends the orphan VMM.
        #expect(try await h.curl("POST", "/v1/vms/vm-orphan/stop").0 == 200)
        orphan.waitUntilExit()
        #expect(try await waitState(h, "vm-orphan", "stopped").state == "stopped")
        await h.stop()
    }

    @Test func stopEndsARunningVMAndBadRequestsChangeNothing() async throws {
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { Issue.record("this test needs /dev/kvm"); return }
        let (h, _) = try harness()
        defer { h.cleanup() }
        try await h.start()
        let kernel = try tempFile("vm-up", Self.image(printing: "UP\n", thenReset: false))
        defer { unlink(kernel) }
        #expect(try await h.curl("POST", "/v1/vms", #"{"name":"vm-up","kernel":"\#(kernel)","memory":"32M"}"#).0 == 201)
        try await Task.sleep(for: .milliseconds(500))
        let (again, againBody) = try await h.curl("POST", "/v1/vms", #"{"name":"vm-up","kernel":"\#(kernel)"}"#)
        #expect(again == 409 && againBody.contains("vm-running"))
        for (body, status, code) in [
            (#"{"name":"x","kernel":"/nonexistent/vmlinuz"}"#, 400, "kernel-not-found"),
            (#"{"name":"Bad Name","kernel":"\#(kernel)"}"#, 400, "bad-request"),
            (#"{"name":"x","kernel":"\#(kernel)","vcpus":99}"#, 400, "bad-request"),
            (#"{"name":"x","kernel":"\#(kernel)","claim":"c-nope"}"#, 404, "not-found"),
            (#"{"name":"x","kernel":"\#(kernel)","disk":"/dev/sda"}"#, 400, "unknown-field"),
        ] {
            let (s, b) = try await h.curl("POST", "/v1/vms", body)
            #expect(s == status && b.contains(code), "\(body): \(s) \(b)")
        }
        #expect(try await h.curl("POST", "/v1/vms", #"{"name":"x","kernel":"\#(kernel)"}"#, asUser: "nobody").0 == 403)
        // A claim's devices go to passage-vmm as --vfio. This machine has no IOMMU (and the claim
        // lives in the fixture tree), so the VMM refuses the device by name and the VM fails; the
        // claim stays held until released.
        let (cs, cb) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm","devices":["0000:00:03.0"]}"#)
        #expect(cs == 201)
        let claim = try #require(try h.json(cb)["id"] as? String)
        let (ps, pb) = try await h.curl("POST", "/v1/vms", #"{"name":"vm-dev","kernel":"\#(kernel)","memory":"32M","claim":"\#(claim)"}"#)
        #expect(ps == 201, "\(pb)")
        let failed = try await waitState(h, "vm-dev", "failed")
        #expect(failed.claim == claim && failed.exitStatus == 1, "\(failed)")
        #expect(failed.message?.contains("0000:00:03.0") == true, "\(failed)")
        #expect(try String(contentsOfFile: h.stateDir + "/vms/vm-dev/vmm.log", encoding: .utf8).contains("0000:00:03.0"))
        #expect(try await h.curl("GET", "/v1/claims/\(claim)").1.contains("\"active\""))
        let (both, bothBody) = try await h.curl("POST", "/v1/vms", #"{"name":"vm-2","kernel":"\#(kernel)","claim":"\#(claim)","devices":["0000:05:00.0"]}"#)
        #expect(both == 400 && bothBody.contains("not both"), "\(bothBody)")
        // devices: claimed for the VM (owner vm:NAME) — a device already held is refused before anything starts.
        let (taken, takenBody) = try await h.curl("POST", "/v1/vms", #"{"name":"vm-3","kernel":"\#(kernel)","memory":"32M","devices":["0000:00:03.0"]}"#)
        #expect(taken == 409, "\(takenBody)")
        #expect(try await h.curl("GET", "/v1/vms/vm-3").0 == 404)
        let (own, ownBody) = try await h.curl("POST", "/v1/vms", #"{"name":"vm-4","kernel":"\#(kernel)","memory":"32M","devices":["0000:05:00.0"]}"#)
        #expect(own == 201, "\(ownBody)")
        let vm4 = try #require(try JSONDecoder().decode(VMInfo.self, from: Data(ownBody.utf8)).claim)
        #expect(try await h.curl("GET", "/v1/claims/\(vm4)").1.contains("\"owner\":\"vm:vm-4\""))
        _ = try await waitState(h, "vm-4", "failed")
        let listed = try await h.curl("GET", "/v1/vms").1
        #expect(listed.contains("\"vm-up\"") && !listed.contains("\"name\":\"x\""))

        let (ss, sb) = try await h.curl("POST", "/v1/vms/vm-up/stop")
        #expect(ss == 200, "\(sb)")
        let vm = try await waitState(h, "vm-up", "stopped")
        #expect(vm.exitStatus == 130 && vm.state == "stopped", "\(vm)")
        #expect(try await h.curl("GET", "/v1/vms/vm-up/console").1 == "UP\n")
        #expect(try await h.curl("GET", "/v1/vms/nope").0 == 404)
        await h.stop()
    }
}
