// Daemon benchmark (issue: passaged): requests per second and p50/p99 latency over the real Unix
// socket for listing devices and for claim+release, with 1, 16 and 64 concurrent clients, on a
// 4,096-function fixture tree (16 PFs × 255 VFs); the list call compared with `lspci -vmm` on the
// same tree. Claims bind through a simulated kernel (the fixture has no kernel behind it).
//
//   swift run -c release daemon-bench [--requests N] [--keep DIR] [--only list|device|claims|lspci|load]
//                                     [--pfs N --vfs-per-pf M]   (another tree: N PFs × M VFs; default 16 × 255)
import Foundation
import HostPCI
import Logging
import PassageAPI
import PassageDaemon
import SysfsFixtures

/// Unbuffered, so that progress shows when the output is a file.
func say(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }
var perClient = 50
var keepAt: String?
var onlyArg: String?
var pfs = 16, vfsPerPF = 255
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    guard let v = args.popFirst() else { fatalError("usage: daemon-bench [--requests N] [--keep DIR] [--only list|device|claims|lspci|load] [--pfs N --vfs-per-pf M]") }
    switch a {
    case "--requests": perClient = Int(v)!
    case "--keep": keepAt = v
    case "--only": onlyArg = v
    case "--pfs": pfs = Int(v)!
    case "--vfs-per-pf": vfsPerPF = Int(v)!
    default: fatalError("unknown option \(a)")
    }
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    return s[min(s.count - 1, Int(Double(s.count) * p))]
}

let reuse = keepAt.map { FileManager.default.fileExists(atPath: $0 + "/bus/pci/devices") } ?? false
let fixture = try keepAt.map { try SysfsFixture(directory: $0) } ?? SysfsFixture(prefix: "passage-dbench")
if !reuse {
    say("building a fixture tree of \(pfs * (1 + vfsPerPF)) functions (\(pfs) PFs × \(vfsPerPF) VFs) …")
    try StandardFixtures.large(in: fixture, pfs: pfs, vfsPerPF: vfsPerPF)
}
try fixture.addDriver("vfio-pci")
let kernel = SimulatedKernel(fixture: fixture)
let state = fixture.root.path + ".bench-state"
try? FileManager.default.removeItem(atPath: state)
let socket = fixture.root.path + ".bench.sock"
let daemon = try Daemon(stateDirectory: state, root: fixture.root, writer: kernel,
                        usage: HostUsage(root: fixture.root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }))
try await daemon.claims.reconcile()
let server = try UnixHTTPServer(socketPath: socket, handler: daemon.api, logger: Logger(label: "bench"))
let serverTask = Task.detached { try await server.run() }  // detached: the main thread blocks in measure()

// VFs on vfio-pci or unbound (the fixture puts every third on iavf): claimable single-function groups.
let claimable = try daemon.inventory.current().devices.filter { $0.isVirtualFunction && $0.driver != "iavf" }.map(\.address.description)
say("fixture: \(try daemon.inventory.current().devices.count) functions, \(claimable.count) claimable VFs; \(perClient) requests per client")

/// Runs `clients` threads each doing `perClient` iterations of `op`; returns (rps, p50 ms, p99 ms).
func measure(clients: Int, iterations: Int, _ op: @escaping @Sendable (UnixHTTPClient, Int, Int) -> Bool) -> (Double, Double, Double, Int) {
    final class Results: @unchecked Sendable { var lat: [[Double]] = []; var failures = 0; let lock = NSLock() }
    let results = Results()
    let group = DispatchGroup()
    let start = now()
    for c in 0..<clients {
        group.enter()
        Thread.detachNewThread {
            let client = UnixHTTPClient(socketPath: socket)
            var lat: [Double] = []
            var failures = 0
            for i in 0..<iterations {
                let t0 = now()
                if !op(client, c, i) { failures += 1 }
                lat.append(now() - t0)
            }
            results.lock.withLock { results.lat.append(lat); results.failures += failures }
            group.leave()
        }
    }
    group.wait()
    let elapsed = now() - start
    let all = results.lat.flatMap { $0 }
    return (Double(all.count) / elapsed, percentile(all, 0.5) * 1000, percentile(all, 0.99) * 1000, results.failures)
}

let only = onlyArg
func wanted(_ part: String) -> Bool { only == nil || only == part }

if wanted("list") {
say("\nGET /v1/devices (all \(try daemon.inventory.current().devices.count), \(try daemon.inventory.listJSON().buffer.readableBytes / 1024) KiB of JSON):")
for clients in [1, 16, 64] {
    let (rps, p50, p99, failed) = measure(clients: clients, iterations: perClient) { client, _, _ in
        (try? client.request("GET", "/v1/devices"))?.status == 200
    }
    say(String(format: "  %2d clients: %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failures %d", clients, rps, p50, p99, failed))
}
say("\nGET /v1/devices with If-None-Match (a poller revalidating the whole list; 304 when nothing changed):")
let tag = try daemon.inventory.entityTag(daemon.inventory.listJSON().generation)
for clients in [1, 16, 64] {
    let (rps, p50, p99, failed) = measure(clients: clients, iterations: perClient) { client, _, _ in
        (try? client.request("GET", "/v1/devices", headers: [("If-None-Match", tag)]))?.status == 304
    }
    say(String(format: "  %2d clients: %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failures %d", clients, rps, p50, p99, failed))
}
say("\nGET /v1/devices?limit=100&after=ADDR (one page of 100):")
let allAddresses = try daemon.inventory.current().devices.map(\.address.description)
for clients in [1, 16, 64] {
    let (rps, p50, p99, failed) = measure(clients: clients, iterations: perClient) { client, c, i in
        (try? client.request("GET", "/v1/devices?limit=100&after=" + allAddresses[(c * 131 + i * 17) % (allAddresses.count - 100)]))?.status == 200
    }
    say(String(format: "  %2d clients: %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failures %d", clients, rps, p50, p99, failed))
}
}
if wanted("device") {
say("\nGET /v1/devices/ADDR (one device):")
for clients in [1, 16, 64] {
    let (rps, p50, p99, failed) = measure(clients: clients, iterations: perClient) { client, c, i in
        (try? client.request("GET", "/v1/devices/" + claimable[(c * 7 + i) % claimable.count]))?.status == 200
    }
    say(String(format: "  %2d clients: %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failures %d", clients, rps, p50, p99, failed))
}
}
if wanted("claims") {
// The bound on claims: one claim+release needs 4 fsync'd SQLite commits (claim intent, claim
// done, release intent, release done), each durable before the step after it. The same store
// code, on the same file system, alone: one writer, so every write is a commit of its own.
// Concurrent claims share commits (group commit), so with many clients the rate can pass this
// bound; the share of the disk's commit rate a run used then says whether fsync is the limit.
let probeDir = state + ".fsync-probe"
try? FileManager.default.removeItem(atPath: probeDir)
let probe = try Store(directory: probeDir)
let commits = 1000
let c0 = now()
for i in 0..<(commits / 2) {
    let id = try probe.beginIntent(kind: "probe", payload: "\(i)", now: 0)
    try probe.endIntent(id, state: "done", now: 0)
}
let commitRate = Double(commits) / (now() - c0)
try? FileManager.default.removeItem(atPath: probeDir)
say(String(format: "\nfsync'd store commits alone: %.0f per s → at most %.0f claim+release/s (4 commits each)", commitRate, commitRate / 4))

say("\nPOST /v1/claims + DELETE /v1/claims/ID (one VF each; a claim and a release are each an intent and a done write, durable before sysfs and before the answer, plus sysfs writes; concurrent requests share fsyncs):")
// At least 400 claim+release per client count (one client alone makes 400), so that the rate is not noise.
let claimsPerClient = max(perClient / 10, 5)
for clients in [1, 16, 64] {
    let iterations = max(claimsPerClient, 400 / clients)
    let commitsBefore = daemon.store.commitCounts
    let (rps, p50, p99, failed) = measure(clients: clients, iterations: iterations) { client, c, i in
        let vf = claimable[(c * iterations + i) % claimable.count]
        guard let r = try? client.request("POST", "/v1/claims", body: Array(#"{"owner":"bench-\#(c)","devices":["\#(vf)"]}"#.utf8)),
              r.status == 201, let claim = try? JSONDecoder().decode(ClaimInfo.self, from: Data(r.body)) else { return false }
        return (try? client.request("DELETE", "/v1/claims/\(claim.id)"))?.status == 200
    }
    let commitsAfter = daemon.store.commitCounts
    let (commits, writes) = (commitsAfter.commits - commitsBefore.commits, commitsAfter.writes - commitsBefore.writes)
    let seconds = Double(clients * iterations) / rps
    say(String(format: "  %2d clients: %8.1f claim+release/s  p50 %7.2f ms  p99 %7.2f ms  failures %d  %3.0f%% of the fsync bound",
               clients, rps, p50, p99, failed, rps / (commitRate / 4) * 100))
    say(String(format: "              %d writes in %d commits (%.1f per fsync): %.0f commits/s, %.0f%% of the disk's commit rate",
               writes, commits, Double(writes) / Double(max(commits, 1)), Double(commits) / seconds, Double(commits) / seconds / commitRate * 100))
}

}

// Load (issue: hardening): 64 busy clients while 100 idle keep-alive connections and 20 slow
// ones (one byte a second, reconnecting when the server cuts them off) sit on the server; then
// the daemon's resident memory over 100,000 requests. Not part of the default run.
if only == "load" {
    func rssKiB() -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return Int(text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    let socketPath = socket
    @Sendable func connectRaw() -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in socketPath.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) } }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        return fd
    }
    // 100 idle: each made one request on a keep-alive connection and then stays silent.
    var idle: [UnixHTTPClient] = []
    for _ in 0..<100 {
        let c = UnixHTTPClient(socketPath: socket)
        _ = try? c.request("GET", "/v1/health")
        idle.append(c)
    }
    // 20 slow: a request trickling in at one byte a second, started again when cut off.
    final class Flag: @unchecked Sendable { var stop = false }
    let stopSlow = Flag()
    for _ in 0..<20 {
        Thread.detachNewThread {
            let request = Array("GET /v1/devices HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
            while !stopSlow.stop {
                let fd = connectRaw()
                var i = 0
                while !stopSlow.stop {
                    var b = request[i % request.count]
                    if send(fd, &b, 1, Int32(MSG_NOSIGNAL)) != 1 { break }
                    i += 1
                    sleep(1)
                }
                close(fd)
            }
        }
    }
    sleep(2)
    let total = try daemon.inventory.current().devices.count
    say("\nunder load: 64 busy clients + 100 idle keep-alive connections + 20 slow (1 byte/s) ones; the whole list is \(total) functions, \(try daemon.inventory.listJSON().buffer.readableBytes / 1024) KiB:")
    for (name, path, header) in [("list, revalidated (If-None-Match)", "/v1/devices", true), ("a page of 100", "/v1/devices?limit=100", false),
                                 ("one device", "/v1/devices/" + claimable[0], false), ("list, all \(total)", "/v1/devices", false)] {
        let tag = try daemon.inventory.entityTag(daemon.inventory.listJSON().generation)
        let (rps, p50, p99, failed) = measure(clients: 64, iterations: perClient) { client, _, _ in
            let r = try? client.request("GET", path, headers: header ? [("If-None-Match", tag)] : [])
            return r?.status == (header ? 304 : 200)
        }
        say("  " + name.padding(toLength: 34, withPad: " ", startingAt: 0) + String(format: " %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failures %d", rps, p50, p99, failed))
    }
    stopSlow.stop = true
    idle.forEach { $0.close() }
    let before = rssKiB()
    var marks: [Int] = []
    for round in 0..<10 {
        _ = measure(clients: 16, iterations: 625) { client, c, i in
            (try? client.request("GET", "/v1/devices/" + claimable[(c * 31 + i) % claimable.count]))?.status == 200
        }
        marks.append(rssKiB())
        _ = round
    }
    say("\nresident memory over 100,000 single-device requests (16 clients), KiB: start \(before), after each 10,000: \(marks.map(String.init).joined(separator: " "))")
    say(String(format: "  growth from the first 10,000 to the last: %+d KiB (%.2f%%)", marks.last! - marks.first!, Double(marks.last! - marks.first!) / Double(marks.first!) * 100))
}

// The peer: lspci -vmm over the same tree.
if (wanted("list") || wanted("lspci")) && only != "load" {
var lspciTimes: [Double] = []
for _ in 0..<5 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/lspci")
    p.arguments = ["-D", "-nn", "-k", "-vmm", "-A", "linux-sysfs", "-O", "sysfs.path=\(fixture.root.path)/bus/pci"]
    p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    let t0 = now()
    try p.run()
    p.waitUntilExit()
    lspciTimes.append(now() - t0)
}
say(String(format: "\nlspci -D -nn -k -vmm on the same tree: median %.1f ms (the daemon's list p50 with 1 client is %.1f× faster)",
             percentile(lspciTimes, 0.5) * 1000, percentile(lspciTimes, 0.5) * 1000 / measure(clients: 1, iterations: 20) { c, _, _ in (try? c.request("GET", "/v1/devices"))?.status == 200 }.1))

}

serverTask.cancel()
_ = await serverTask.result
try? FileManager.default.removeItem(atPath: state)
if keepAt == nil { fixture.remove() }
