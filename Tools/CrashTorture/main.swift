// crash-torture: SIGKILLs passaged at random points of mixed claim / release / VF operations,
// 100+ times, and checks after every restart that the invariants hold and how fast it was ready.
//
//   crash-torture [--kills N] [--seed S] [--write-delay-ms D] [--max-delay-ms M] [--keep]
//
// The daemon is the real PassageDaemon (store, intents, reconciliation, HTTP server, the same
// services passaged runs) in a child process of this tool (`crash-torture serve …`) on a fixture
// sysfs tree whose kernel is the SimulatedKernel — the tree keeps the "hardware" state across
// kills, the state directory keeps the store. The simulated kernel runs in this (parent) process
// and the daemon's sysfs writes reach it over a Unix socket, so that, as with the real kernel, a
// write the daemon made is carried out whole even when the daemon dies right after making it. Every simulated sysfs write waits D ms (default 15)
// so that a kill, M ms (default 300) at most after a request went out, lands inside operations.
// After each kill: the child is restarted, `GET /v1/health` polled until 200 (ready time), then:
//   - no IOMMU group is held by two claims, and no claim is left binding/releasing (intents done);
//   - every function of an active claim is on vfio-pci; every other function is on the driver it
//     had at the start (VFs: the PF has 0 or 2, all on vfio-pci) — nothing unbound without an owner;
//   - no claim lost: every claim whose creation was answered 201 and not released since is active.
// Prints one line per kill and a summary; exit 1 on any violation. The lab does the same against
// the real kernel with fewer kills (Tests/Lab/scenarios/daemon.sh, daemon-vf.sh).
import Foundation
import HostPCI
import Logging
import PassageAPI
import PassageDaemon
import ServiceLifecycle
import SysfsFixtures

let args = Array(CommandLine.arguments.dropFirst())
func option(_ name: String, _ fallback: Int) -> Int {
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
    return v
}

/// The daemon's side of the simulated kernel: each write goes to the parent over a Unix socket
/// (path and value, length-prefixed) and the errno comes back.
final class RemoteKernel: SysfsWriter, @unchecked Sendable {
    let fd: Int32
    let lock = NSLock()
    init(socket path: String) throws {
        fd = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        _ = withUnsafeMutableBytes(of: &addr.sun_path) { p in path.utf8CString.withUnsafeBytes { p.copyMemory(from: $0) } }
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard r == 0 else { throw FixtureError("cannot reach the simulated kernel at \(path): errno \(errno)") }
    }
    func write(_ value: String, to path: String) throws(HostPCIError) {
        let e: Int32 = lock.withLock {
            var frame: [UInt8] = []
            for part in [path, value] { let b = Array(part.utf8); frame += withUnsafeBytes(of: UInt32(b.count).littleEndian, Array.init) + b }
            guard frame.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == frame.count else { return EIO }
            var reply: Int32 = 0
            guard Glibc.read(fd, &reply, 4) == 4 else { return EIO }
            return reply
        }
        if e != 0 { throw HostPCIError(code: .io, message: "writing \(value.debugDescription) to \(path) failed: \(String(cString: strerror(e)))", errno: e) }
    }
}

/// Connections (daemons) whose writes the simulated kernel is still applying. After a kill the
/// parent waits for this to reach 0: a write the daemon had sent is carried out before the next
/// daemon starts, as a real write(2) finishes before the killed process is gone.
let kernelConnections = Locked<Int>(0)

/// The parent's side: applies each write with the simulated kernel, one connection (daemon) at a time.
func serveKernel(_ kernel: SimulatedKernel, at path: String) {
    unlink(path)
    let listener = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    _ = withUnsafeMutableBytes(of: &addr.sun_path) { p in path.utf8CString.withUnsafeBytes { p.copyMemory(from: $0) } }
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    listen(listener, 4)
    Thread.detachNewThread {
        while true {
            let c = accept(listener, nil, nil)
            guard c >= 0 else { continue }
            kernelConnections.withLock { $0 += 1 }
            Thread.detachNewThread {
                defer { close(c); kernelConnections.withLock { $0 -= 1 } }
                func readExactly(_ n: Int) -> [UInt8]? {
                    var out = [UInt8](repeating: 0, count: n), got = 0
                    while got < n {
                        let r = out.withUnsafeMutableBytes { read(c, $0.baseAddress! + got, n - got) }
                        if r <= 0 { return nil }
                        got += r
                    }
                    return out
                }
                func string() -> String? {
                    guard let l = readExactly(4) else { return nil }
                    let n = Int(UInt32(l[0]) | UInt32(l[1]) << 8 | UInt32(l[2]) << 16 | UInt32(l[3]) << 24)
                    return n == 0 ? "" : readExactly(n).map { String(decoding: $0, as: UTF8.self) }
                }
                while let p = string(), let v = string() {
                    var e: Int32 = 0
                    do throws(HostPCIError) { try kernel.write(v, to: p) } catch { e = error.errno ?? EIO }
                    _ = Glibc.write(c, &e, 4)
                }
            }
        }
    }
}

/// Waits `ms` before every write of the simulated kernel (so kills land inside operations).
final class DelayedWriter: SysfsWriter, @unchecked Sendable {
    let inner: SysfsWriter
    let delay: UInt32
    init(_ inner: SysfsWriter, ms: Int) { self.inner = inner; delay = UInt32(max(ms, 0)) * 1000 }
    func write(_ value: String, to path: String) throws(HostPCIError) {
        if delay > 0 { usleep(delay) }
        try inner.write(value, to: path)
    }
}

let pf = try! PCIAddress(parsing: "01:00.0")
/// The functions the torture claims: a shared group (05:00.0 + 05:00.1), an unbound one, and
/// four plain e1000e functions in groups of their own.
let targets = ["0000:05:00.0", "0000:00:03.0"] + (0..<4).map { "0000:10:0\($0).0" }

func extraDevices(_ fixture: SysfsFixture) throws {
    for i in 0..<4 {
        var d = FixtureDevice(try PCIAddress(bus: 0x10, device: UInt8(i), function: 0), vendor: 0x8086, device: 0x10d3, class: 0x020000)
        d.driver = "e1000e"
        d.iommuGroup = 100 + i
        try fixture.add(d)
    }
    try fixture.addDriver("vfio-pci")
}

// MARK: child: the daemon

/// passage-vmm built next to this tool (swift build puts them side by side), for the VM operations.
let vmmPath = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("passage-vmm").path

if args.first == "serve" {
    // serve ROOT STATE SOCKET DELAY_MS
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = .info
        return h
    }
    let logger = Logger(label: "passaged-sim")
    let fixture = try SysfsFixture(directory: args[1])
    let writer = DelayedWriter(try RemoteKernel(socket: args[1] + ".kernel"), ms: Int(args[4]) ?? 0)
    let daemon = try Daemon(stateDirectory: args[2], root: fixture.root, writer: writer,
                            usage: HostUsage(root: fixture.root, mountInfoPath: "/nonexistent", swapsPath: "/nonexistent", addresses: { _ in [] }),
                            policyPath: args[2] + "/no-policy.toml", vmmPath: vmmPath)
    let server = try UnixHTTPServer(socketPath: args[3], mode: 0o600, handler: daemon.api, logger: logger)
    let group = ServiceGroup(services: [server, ReconcileService(daemon: daemon, interval: .seconds(3600), logger: logger)],
                             gracefulShutdownSignals: [.sigterm], logger: logger)
    try await group.run()
    exit(0)
}

// MARK: parent: the torture

let kills = option("--kills", 120)
var rng = SystemRandomNumberGenerator()
let seed = UInt64(option("--seed", Int(UInt32.random(in: 0...UInt32.max, using: &rng))))
let writeDelay = option("--write-delay-ms", 15)
let maxDelay = option("--max-delay-ms", 300)
struct SplitMix { var s: UInt64; mutating func next() -> UInt64 { s &+= 0x9E37_79B9_7F4A_7C15; var z = s; z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9; z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB; return z ^ (z >> 31) } }
var random = SplitMix(s: seed)
func pick(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }

let fixture = try SysfsFixture(prefix: "passage-torture")
try StandardFixtures.small(in: fixture)
try extraDevices(fixture)
let state = fixture.root.path + ".state", socket = fixture.root.path + ".sock", log = fixture.root.path + ".log"
let keep = args.contains("--keep")
defer {
    if keep { print("crash-torture: kept \(fixture.root.path) (sysfs), \(state), \(log)") } else {
        fixture.remove(); try? FileManager.default.removeItem(atPath: state); unlink(socket); unlink(log); unlink(fixture.root.path + ".kernel")
    }
}
let kernel = SimulatedKernel(fixture: fixture)
StandardFixtures.teachSmallVFs(kernel)
signal(SIGPIPE, SIG_IGN)                 // a reply to a daemon that was just killed
serveKernel(kernel, at: fixture.root.path + ".kernel")

func driver(_ a: String) -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: fixture.root.pciDevicesPath + "/\(a)/driver")).map { ($0 as NSString).lastPathComponent } ?? "-"
}
func functions() -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: fixture.root.pciDevicesPath)) ?? []).sorted()
}
func vfs() -> [String] { functions().filter { FileManager.default.fileExists(atPath: fixture.root.pciDevicesPath + "/\($0)/physfn") } }

var child: pid_t = 0
func startDaemon() -> Double? {
    let logFD = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    defer { close(logFD) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, logFD, 1)
    posix_spawn_file_actions_adddup2(&actions, logFD, 2)
    let words: [String] = [CommandLine.arguments[0], "serve", fixture.root.path, state, socket, "\(writeDelay)"]
    let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let t0 = Date()
    guard posix_spawn(&child, CommandLine.arguments[0], &actions, nil, argv, environ) == 0 else { return nil }
    // Ready (timed): health answers 200, i.e. the daemon serves. Then (not timed) until start-up
    // reconciliation has finished its undo work ("reconciled": true), which the invariants are about.
    var ready: Double?
    while Date().timeIntervalSince(t0) < 30 {
        let c = UnixHTTPClient(socketPath: socket, timeout: 2)
        if let r = try? c.request("GET", "/v1/health"), r.status == 200 {
            if ready == nil { ready = Date().timeIntervalSince(t0) }
            if let h = try? JSONDecoder().decode(HealthInfo.self, from: Data(r.body)), h.reconciled { c.close(); return ready }
        }
        c.close()
        usleep(2000)
    }
    return nil
}

func request(_ method: String, _ path: String, _ body: String? = nil) -> UnixHTTPClient.Response? {
    let c = UnixHTTPClient(socketPath: socket, timeout: 30)
    defer { c.close() }
    return try? c.request(method, path, body: body.map { Array($0.utf8) }, headers: body == nil ? [] : [("Content-Type", "application/json")])
}

func claims() -> [ClaimInfo]? {
    guard let r = request("GET", "/v1/claims"), r.status == 200 else { return nil }
    return try? JSONDecoder().decode([ClaimInfo].self, from: Data(r.body))
}

// Baseline: the VFs made once (2 on vfio-pci), every other function's driver noted.
guard startDaemon() != nil else { print("crash-torture: the daemon did not start; see \(log)"); exit(1) }
_ = request("POST", "/v1/pfs/\(pf)/vfs", #"{"count": 2, "driver": "vfio-pci"}"#)
for _ in 0..<200 where !(vfs().count == 2 && vfs().allSatisfy { driver($0) == "vfio-pci" }) { usleep(20_000) }
let baseline = Dictionary(uniqueKeysWithValues: functions().filter { !vfs().contains($0) }.map { ($0, driver($0)) })

// VM operations when this machine can run them: a synthetic guest that halts forever, so a started
// VM runs until it is stopped; at most three at a time.
let vmsEnabled = access("/dev/kvm", R_OK | W_OK) == 0 && FileManager.default.isExecutableFile(atPath: vmmPath) && !args.contains("--no-vms")
let guestKernel = state + "/guest.bzImage"
FileManager.default.createFile(atPath: guestKernel, contents: Data(SyntheticKernel.printing("UP\n", thenReset: false)))
if !vmsEnabled { print("crash-torture: no VM operations (needs /dev/kvm and \(vmmPath))") }
struct VMRow: Decodable { var name: String; var state: String; var pid: Int32? }
func vmList() -> [VMRow]? {
    guard let r = request("GET", "/v1/vms"), r.status == 200 else { return nil }
    return try? JSONDecoder().decode([VMRow].self, from: Data(r.body))
}
/// The passage-vmm processes of this run (their console files are in its state directory).
func vmmProcesses() -> [Int32: String] {
    var out: [Int32: String] = [:]
    for e in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(e), let data = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
        let argv = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard argv.first?.hasSuffix("passage-vmm") == true, let c = argv.first(where: { $0.hasPrefix("file:" + state + "/") }) else { continue }
        out[pid] = URL(fileURLWithPath: String(c.dropFirst(5))).deletingLastPathComponent().lastPathComponent
    }
    return out
}

/// Claims answered 201 and not released since: must survive every kill.
let committed = Locked<Set<String>>([])
var violations = 0, readyTimes: [Double] = [], cutShort = 0
print("crash-torture: \(kills) kills, seed \(seed), simulated sysfs writes \(writeDelay) ms each, kills 0…\(maxDelay) ms after a request")

for k in 1...kills {
    // One operation (sometimes two at once), then the kill somewhere inside or after it.
    let ops = 1 + pick(2)
    var what: [String] = []
    let sent = DispatchGroup()
    for _ in 0..<ops {
        let active = (claims() ?? []).filter { $0.state == "active" }
        let kind = pick(vmsEnabled ? 12 : 10)
        let op: () -> Void
        let running = kind >= 10 ? (vmList() ?? []).filter { $0.state == "running" } : []
        if kind >= 10 && (kind == 10 && running.count < 3 || running.isEmpty) {
            let name = "vm-\(1 + pick(4))"
            what.append("vm start \(name)")
            op = { _ = request("POST", "/v1/vms", #"{"name": "\#(name)", "kernel": "\#(guestKernel)", "memory": "32M"}"#) }
        } else if kind >= 10, let vm = running.randomElement(using: &rng) {
            what.append("vm stop \(vm.name)")
            op = { _ = request("POST", "/v1/vms/\(vm.name)/stop") }
        } else if kind < 5 {
            let a = targets[pick(targets.count)]
            what.append("claim \(a)")
            op = {
                if let r = request("POST", "/v1/claims", #"{"owner": "torture-\#(k)", "devices": ["\#(a)"]}"#), r.status == 201,
                   let c = try? JSONDecoder().decode(ClaimInfo.self, from: Data(r.body)) {
                    committed.withLock { _ = $0.insert(c.id) }
                }
            }
        } else if kind < 8, let c = active.randomElement(using: &rng) {
            what.append("release \(c.id)")
            op = {
                // From the moment the release is asked for, the claim may legitimately end.
                committed.withLock { _ = $0.remove(c.id) }
                _ = request("DELETE", "/v1/claims/\(c.id)")
            }
        } else if vfs().isEmpty {
            what.append("vf create")
            op = { _ = request("POST", "/v1/pfs/\(pf)/vfs", #"{"count": 2, "driver": "vfio-pci"}"#) }
        } else {
            what.append("vf remove")
            op = { _ = request("DELETE", "/v1/pfs/\(pf)/vfs") }
        }
        sent.enter()
        Thread.detachNewThread { op(); sent.leave() }
    }
    usleep(UInt32(pick(maxDelay + 1)) * 1000)
    kill(child, SIGKILL)
    var status: Int32 = 0
    waitpid(child, &status, 0)
    while kernelConnections.withLock({ $0 }) > 0 { usleep(1000) }
    _ = sent.wait(timeout: .now() + 5)
    guard let ready = startDaemon() else { print("kill \(k): the daemon did not come back; see \(log)"); exit(1) }
    readyTimes.append(ready)
    // The invariants.
    var problems: [String] = []
    let list = claims() ?? []
    let held = list.filter { ["active", "binding", "releasing"].contains($0.state) }.flatMap(\.groups)
    if Set(held).count != held.count { problems.append("a group is held twice: \(held)") }
    if list.contains(where: { $0.state == "binding" || $0.state == "releasing" }) { problems.append("an intent survived reconciliation") }
    let claimed = Set(list.filter { $0.state == "active" }.flatMap { $0.members.map(\.address) })
    for (a, d) in baseline {
        let now = driver(a)
        if claimed.contains(a) {
            if now != "vfio-pci" { problems.append("\(a) is claimed but on \(now)") }
        } else if now != d {
            problems.append("\(a) is on \(now) without an owner (it had \(d))")
        }
    }
    let v = vfs()
    if !(v.isEmpty || (v.count == 2 && v.allSatisfy { driver($0) == "vfio-pci" })) {
        problems.append("the PF has \(v.count) VFs on \(v.map(driver))")
    }
    if vmsEnabled {
        // No VMM lost: every passage-vmm of this run is a running VM of the daemon's, with its pid;
        // every VM the daemon calls running has its passage-vmm.
        let vms = vmList() ?? []
        let processes = vmmProcesses()
        for (pid, name) in processes where !vms.contains(where: { $0.name == name && $0.state == "running" && $0.pid == pid }) {
            problems.append("passage-vmm pid \(pid) of \(name) runs but the daemon has \(vms.first { $0.name == name }.map { "\($0.state), pid \($0.pid.map(String.init) ?? "none")" } ?? "no such VM")")
        }
        for vm in vms where vm.state == "running" && processes[vm.pid ?? -1] != vm.name {
            problems.append("VM \(vm.name) is running with pid \(vm.pid.map(String.init) ?? "none"), which is not its passage-vmm")
        }
    }
    let active = Set(list.filter { $0.state == "active" }.map(\.id))
    let missing = committed.withLock { $0.subtracting(active) }
    if !missing.isEmpty { problems.append("claims lost: \(missing.sorted())") }
    let report = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").last { $0.contains("] reconciled") }
    if let report, report.contains("rolledBack=[\"") || report.contains("finished=[\"") { cutShort += 1 }
    violations += problems.isEmpty ? 0 : 1
    print("kill \(k) [\(what.joined(separator: " + "))]: ready in \(String(format: "%.3f", ready)) s, " + (problems.isEmpty ? "invariants hold" : "VIOLATED: " + problems.joined(separator: "; ")))
    if !problems.isEmpty, let report { print("    the restart's reconciliation: \(report)") }
    if !problems.isEmpty && args.contains("--stop-at-first") { break }

}
for vm in (vmList() ?? []) where vm.state == "running" { _ = request("POST", "/v1/vms/\(vm.name)/stop") }
for (pid, _) in vmmProcesses() { kill(pid, SIGKILL) }
kill(child, SIGTERM)
var status: Int32 = 0
waitpid(child, &status, 0)

let sorted = readyTimes.sorted()
func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
print(String(format: "crash-torture: %d kills, %d with violations, %d cut an operation short (reconciliation rolled back or finished it); ready p50 %.3f s, p99 %.3f s, max %.3f s (goal ≤ 1 s)",
             kills, violations, cutShort, pct(0.5), pct(0.99), sorted.last ?? 0))
exit(violations == 0 ? 0 : 1)

final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}
