// Inventory benchmark (issue: foundation): `passage devices --json` against
// `lspci -D -nn -k -vmm` on the same synthetic sysfs tree of 16 PFs × 255 VFs (4,096 functions).
//
//   swift run -c release inventory-bench [--pfs 16] [--vfs 255] [--reps 9]
//
// Prints each command's median wall time and the ratio passage/lspci (goal: at most 1.0).
import Foundation
import SysfsFixtures

#if canImport(Glibc)
import Glibc
#endif

var pfs = 16, vfs = 255, reps = 9
var keepAt: String?  // --keep DIR: build the tree there (or reuse it) and leave it for profiling
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    guard let v = args.popFirst() else { fatalError("usage: inventory-bench [--pfs N] [--vfs N] [--reps N] [--keep DIR]") }
    switch a {
    case "--pfs": pfs = Int(v)!
    case "--vfs": vfs = Int(v)!
    case "--reps": reps = Int(v)!
    case "--keep": keepAt = v
    default: fatalError("unknown option \(a)")
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs a command with stdout to `output` (a file) and stderr discarded; returns wall seconds.
func run(_ argv: [String], output: String) -> Double {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let cargs = argv.map { strdup($0) } + [nil]
    defer { cargs.forEach { free($0) } }
    var pid: pid_t = 0
    let start = now()
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, cargs, environ)
    guard rc == 0 else { fatalError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let elapsed = now() - start
    posix_spawn_file_actions_destroy(&actions)
    guard status == 0 else { fatalError("\(argv.joined(separator: " ")) exited with status \(status)") }
    return elapsed
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

let selfPath = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
let passage = selfPath.deletingLastPathComponent().appendingPathComponent("passage").path
guard FileManager.default.isExecutableFile(atPath: passage) else {
    fatalError("\(passage) not found: build it first (swift build -c release --product passage)")
}

print("building a fixture tree of \(pfs) PFs × \(vfs) VFs = \(pfs * (vfs + 1)) functions …")
let t0 = now()
let reuse = keepAt.map { FileManager.default.fileExists(atPath: $0 + "/bus/pci/devices") } ?? false
let fixture = try keepAt.map { try SysfsFixture(directory: $0) } ?? SysfsFixture(prefix: "passage-bench")
defer { if keepAt == nil { fixture.remove() } }
if !reuse { try StandardFixtures.large(in: fixture, pfs: pfs, vfsPerPF: vfs) }
print(String(format: "  built in %.1f s at %@", now() - t0, fixture.root.path))

let out = fixture.root.path + ".out"
defer { unlink(out) }
let passageArgs = [passage, "devices", "--json", "--sysfs-root", fixture.root.path]
let lspciArgs = ["lspci", "-D", "-nn", "-k", "-vmm", "-A", "linux-sysfs", "-O", "sysfs.path=\(fixture.root.path)/bus/pci"]

// Sanity: both see every function.
_ = run(passageArgs, output: out)
let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as! [[String: Any]]
_ = run(lspciArgs, output: out)
let slots = try String(contentsOfFile: out, encoding: .utf8).components(separatedBy: "\nSlot:").count
print("  passage lists \(json.count) devices, lspci \(slots)")
guard json.count == pfs * (vfs + 1), slots == json.count else { fatalError("the two tools disagree on the device count") }

var tp: [Double] = [], tl: [Double] = []
for _ in 0..<reps {  // interleaved so that both see the same cache and load
    tp.append(run(passageArgs, output: out))
    tl.append(run(lspciArgs, output: out))
}
let mp = median(tp), ml = median(tl)
print(String(format: "passage devices --json : median %.1f ms (min %.1f, max %.1f, %d runs)", mp * 1000, tp.min()! * 1000, tp.max()! * 1000, reps))
print(String(format: "lspci -D -nn -k -vmm   : median %.1f ms (min %.1f, max %.1f, %d runs)", ml * 1000, tl.min()! * 1000, tl.max()! * 1000, reps))
print(String(format: "ratio passage/lspci    : %.2f (goal ≤ 1.00)", mp / ml))
