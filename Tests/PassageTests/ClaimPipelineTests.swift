import Foundation
import Testing
@testable import HostPCI
import PassageAPI
@testable import PassageDaemon
import SysfsFixtures

/// Claims and releases overlapping in the daemon (their store writes share group commits while
/// the change queue serves others): every sysfs write still comes after its intent is durable,
/// every answer after its done write is, and concurrent requests on one claim or key stay exact.
@Suite(.serialized) struct ClaimPipelineTests {
    /// The simulated kernel behind a check: before each write that names a function, a second store
    /// connection must see a committed, pending claim or release intent of a claim holding it.
    final class IntentWitness: SysfsWriter, @unchecked Sendable {
        let inner: SimulatedKernel
        let observer: Store
        private let lock = NSLock()
        private(set) var checked = 0
        private(set) var uncovered: [String] = []

        init(inner: SimulatedKernel, observer: Store) {
            self.inner = inner
            self.observer = observer
        }

        func write(_ value: String, to path: String) throws(HostPCIError) {
            if let a = Self.function(value, path) {
                let covered = ((try? observer.pendingIntents()) ?? []).contains { intent in
                    guard intent.kind == "claim" || intent.kind == "release", let id = intent.claimID,
                          let claim = try? observer.claim(id: id) else { return false }
                    return claim.devices.contains { $0.address == a.description }
                }
                lock.withLock {
                    checked += 1
                    if !covered { uncovered.append("\(value.debugDescription) → \(path)") }
                }
            }
            try inner.write(value, to: path)
        }

        /// The function a write is about: the value (bind, unbind, drivers_probe) or the device directory (attributes).
        static func function(_ value: String, _ path: String) -> PCIAddress? {
            if let a = try? PCIAddress(parsing: value.trimmingCharacters(in: .whitespacesAndNewlines)) { return a }
            let parts = path.split(separator: "/")
            guard let i = parts.lastIndex(of: "devices"), i + 1 < parts.count else { return nil }
            return try? PCIAddress(parsing: String(parts[i + 1]))
        }
    }

    @Test func everySysfsWriteFollowsADurableIntentAndEveryAnswerADurableDone() async throws {
        let h = try DaemonHarness(extraGroups: 8)
        defer { h.cleanup() }
        let witness = IntentWitness(inner: h.kernel, observer: try Store(directory: h.stateDir))
        h.daemon = try DaemonHarness.makeDaemon(h.stateDir, h.fixture, witness)
        try await h.start()
        let before = try h.hostState()
        let observer = witness.observer
        let socket = h.socket
        // 16 clients, 2 per group: claims and releases overlap, and some claims meet a held group.
        let outcomes = try await withThrowingTaskGroup(of: [String].self) { group in
            for c in 0..<16 {
                group.addTask {
                    try await blocking { () -> [String] in
                        let client = UnixHTTPClient(socketPath: socket)
                        var problems: [String] = []
                        for r in 0..<10 {
                            let target = "0000:10:\(hex((c + r) % 8, 2)).0"
                            let resp = try client.request("POST", "/v1/claims", body: Array(#"{"owner":"w\#(c)","devices":["\#(target)"]}"#.utf8))
                            if resp.status == 409 { continue }
                            guard resp.status == 201, let claim = try? JSONDecoder().decode(ClaimInfo.self, from: Data(resp.body)) else {
                                problems.append("claim: \(resp.status) \(resp.text)")
                                continue
                            }
                            // The answer came after the done write was durable: another connection sees the claim active.
                            if try observer.claim(id: claim.id)?.state != .active { problems.append("\(claim.id) answered 201 before it was active on disk") }
                            let release = try client.request("DELETE", "/v1/claims/\(claim.id)")
                            if release.status != 200 { problems.append("release: \(release.status) \(release.text)") }
                            if try observer.claim(id: claim.id)?.state != .released { problems.append("\(claim.id) answered 200 before it was released on disk") }
                        }
                        return problems
                    }
                }
            }
            var all: [String] = []
            for try await p in group { all += p }
            return all
        }
        #expect(outcomes.isEmpty, "\(outcomes.prefix(5))")
        #expect(witness.checked >= 16, "the clients made claims that wrote to sysfs (\(witness.checked) writes)")
        #expect(witness.uncovered.isEmpty, "sysfs written without a durable intent: \(witness.uncovered.prefix(5))")
        #expect(try h.daemon.store.pendingIntents().isEmpty)
        #expect(try h.daemon.store.groupHolds().isEmpty)
        #expect(try h.hostState() == before)
        let counts = h.daemon.store.commitCounts
        print("pipeline: \(witness.checked) sysfs writes checked; \(counts.writes) store writes in \(counts.commits) commits")
        await h.stop()
    }

    @Test func concurrentCreatesWithOneIdempotencyKeyMakeOneClaim() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let socket = h.socket
        let answers = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for _ in 0..<12 {
                group.addTask {
                    try await blocking {
                        let r = try UnixHTTPClient(socketPath: socket).request(
                            "POST", "/v1/claims", body: Array(#"{"owner":"vm-k","devices":["0000:05:00.1"],"idempotencyKey":"boot-7"}"#.utf8))
                        return (r.status, (try? JSONDecoder().decode(ClaimInfo.self, from: Data(r.body)).id) ?? r.text)
                    }
                }
            }
            var all: [(Int, String)] = []
            for try await a in group { all.append(a) }
            return all
        }
        #expect(answers.filter { $0.0 == 201 }.count == 1, "\(answers)")
        #expect(answers.filter { $0.0 == 200 }.count == 11, "the others waited for the first and got its claim: \(answers)")
        #expect(Set(answers.map(\.1)).count == 1)
        #expect(try h.daemon.store.claims().count == 1)
        await h.stop()
    }

    @Test func aSecondReleaseWhileTheFirstRunsIsRefusedAndChangesNothing() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let before = try h.hostState()
        let (s, body) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-r","devices":["0000:05:00.1"]}"#)
        #expect(s == 201, "\(body)")
        let id = try JSONDecoder().decode(ClaimInfo.self, from: Data(body.utf8)).id
        // The first release stalls in its sysfs work (the e1000 bind back takes a second).
        h.kernel.hangNextWrite(pathSuffix: "drivers/e1000/bind", seconds: 1)
        let first = Task { try await h.curl("DELETE", "/v1/claims/\(id)") }
        let deadline = Date().addingTimeInterval(5)
        while try h.daemon.store.claim(id: id)?.state != .releasing && Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try h.daemon.store.claim(id: id)?.state == .releasing)
        let (s2, b2) = try await h.curl("DELETE", "/v1/claims/\(id)")
        #expect(s2 == 409 && b2.contains("claim-busy"), "\(b2)")
        let (s1, b1) = try await first.value
        #expect(s1 == 200 && b1.contains("\"state\":\"released\""), "\(b1)")
        #expect(try h.hostState() == before)
        // Once done, releasing again answers the released claim.
        let (s3, b3) = try await h.curl("DELETE", "/v1/claims/\(id)")
        #expect(s3 == 200 && b3.contains("\"state\":\"released\""))
        #expect(try h.daemon.store.pendingIntents().isEmpty)
        await h.stop()
    }

    @Test func aClaimWhoseBindFailsPutsEverythingBackAndFrees() async throws {
        let h = try DaemonHarness()
        defer { h.cleanup() }
        try await h.start()
        let before = try h.hostState()
        // Group 5: 05:00.1 (asked for, unbound) binds first; then 05:00.0's probe fails.
        h.kernel.failNextWrite(pathSuffix: "drivers_probe", value: "0000:05:00.0", errno: EIO)
        let (s, body) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-f","devices":["0000:05:00.1"]}"#)
        #expect(s == 500 && body.contains("0000:05:00.0") && body.contains("0000:05:00.1 was put back too"), "\(body)")
        #expect(try h.hostState() == before)
        let claims = try h.daemon.store.claims()
        #expect(claims.count == 1 && claims.first?.state == .failed && claims.first?.error?.contains("put back") == true)
        #expect(try h.daemon.store.pendingIntents().isEmpty && h.daemon.store.groupHolds().isEmpty)
        #expect(h.daemon.events.kept.contains { $0.kind == "claim-failed" && $0.claimId == claims.first?.id })
        // The group is free again.
        let (s2, b2) = try await h.curl("POST", "/v1/claims", #"{"owner":"vm-f","devices":["0000:05:00.1"]}"#)
        #expect(s2 == 201, "\(b2)")
        await h.stop()
    }
}
