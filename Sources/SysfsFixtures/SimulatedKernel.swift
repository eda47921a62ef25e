import Foundation
import HostPCI

/// A stand-in for the kernel's sysfs write side, over a fixture tree: writes land in the tree and
/// the tree changes the way the kernel would change it (bind, unbind, `drivers_probe`,
/// `sriov_numvfs` creating and removing VFs). It can inject failures and hangs, and records every
/// write. Unit tests use it for decision logic; the lab runs the same code on the real kernel.
public final class SimulatedKernel: SysfsWriter, @unchecked Sendable {
    public let fixture: SysfsFixture
    private let lock = NSLock()
    /// Every successful write, in order: (path relative to the root, value).
    public private(set) var writes: [(path: String, value: String)] = []
    /// The driver `drivers_probe` picks for a function with no `driver_override`.
    public var naturalDrivers: [PCIAddress: String] = [:]
    /// Drivers whose probe fails for these functions (bind then returns ENODEV / leaves it unbound).
    public var probeFailures: [String: Set<PCIAddress>] = [:]
    /// VF templates by PF: what `sriov_numvfs` creates.
    public var vfTemplates: [PCIAddress: @Sendable (Int) -> FixtureDevice] = [:]
    private var faults: [(match: (String, String) -> Bool, errno: Int32, hang: Double)] = []
    private var planned: (fault: Fault, n: Int, suffix: String?, seen: Int)?
    private var failing: [(suffix: String, errno: Int32)] = []
    private var attempts = 0
    /// Called after each write the kernel applied, outside the lock: (path relative to the root, value).
    /// Tests hang simulated devices off it (a PF `reset` resetting an NVMe controller model).
    public var afterWrite: (@Sendable (_ path: String, _ value: String) -> Void)?

    /// How an injected fault shows to the writer.
    public enum Fault: Sendable, Hashable, CustomStringConvertible {
        /// The write fails with this errno and changes nothing.
        case errno(Int32)
        /// The write returns success but the kernel never reacts (a driver that never binds, VFs
        /// that never appear, an attribute that keeps its value): the caller's wait must time out.
        case noReaction

        /// ENODEV, EBUSY, EIO and a timeout: the kinds every device operation must survive.
        public static let all: [Fault] = [.errno(ENODEV), .errno(EBUSY), .errno(EIO), .noReaction]

        public var description: String {
            switch self {
            case let .errno(e): e == ENODEV ? "ENODEV" : e == EBUSY ? "EBUSY" : e == EIO ? "EIO" : "errno \(e)"
            case .noReaction: "timeout"
            }
        }
    }

    /// Write attempts so far (failed ones included), for counting the writes an operation makes.
    public var writeAttempts: Int { lock.withLock { attempts } }

    /// The `n`th write from now (1-based; counting only writes whose path ends with `pathSuffix`
    /// when given) meets `fault`. One planned fault at a time; it fires once.
    public func injectFault(_ fault: Fault, atWrite n: Int, pathSuffix: String? = nil) {
        lock.withLock { planned = (fault, n, pathSuffix, 0) }
    }

    /// True once the planned fault has fired (or none is planned).
    public var plannedFaultFired: Bool { lock.withLock { planned == nil } }

    public init(fixture: SysfsFixture) {
        self.fixture = fixture
    }

    /// Forgets the recorded writes (after setting a fixture up through the kernel).
    public func writesReset() { lock.withLock { writes.removeAll() } }

    /// The next write whose path ends with `suffix` (and, if given, whose value is `value`) fails with `errno`.
    public func failNextWrite(pathSuffix suffix: String, value: String? = nil, errno: Int32) {
        lock.withLock { faults.append(({ p, v in p.hasSuffix(suffix) && (value == nil || v == value) }, errno, 0)) }
    }

    /// Every write whose path ends with `suffix` fails with `errno`, until `stopFailingWrites()`.
    public func failWrites(pathSuffix suffix: String, errno: Int32) {
        lock.withLock { failing.append((suffix, errno)) }
    }

    /// Ends every `failWrites`.
    public func stopFailingWrites() { lock.withLock { failing.removeAll() } }

    /// The next write whose path ends with `suffix` blocks for `seconds`, then succeeds.
    public func hangNextWrite(pathSuffix suffix: String, seconds: Double) {
        lock.withLock { faults.append(({ p, _ in p.hasSuffix(suffix) }, 0, seconds)) }
    }

    public func write(_ value: String, to path: String) throws(HostPCIError) {
        let root = fixture.root.path
        guard path.hasPrefix(root + "/") else {
            throw HostPCIError(code: .io, message: "simulated kernel: \(path) is outside \(root)")
        }
        let rel = String(path.dropFirst(root.count + 1))
        let v = value.hasSuffix("\n") ? String(value.dropLast()) : value
        var hang = 0.0
        var injected: Int32 = 0
        var ignored = false
        lock.withLock {
            attempts += 1
            if var p = planned, p.suffix.map({ rel.hasSuffix($0) }) ?? true {
                p.seen += 1
                planned = p
                if p.seen == p.n {
                    planned = nil
                    switch p.fault {
                    case let .errno(e): injected = e
                    case .noReaction: ignored = true
                    }
                }
            }
            if injected == 0, !ignored, let i = faults.firstIndex(where: { $0.match(rel, v) }) {
                injected = faults[i].errno
                hang = faults[i].hang
                faults.remove(at: i)
            }
            if injected == 0, !ignored, let f = failing.first(where: { rel.hasSuffix($0.suffix) }) { injected = f.errno }
        }
        if hang > 0 { Thread.sleep(forTimeInterval: hang) }
        if injected != 0 { throw Self.error(injected, path, v) }
        if ignored { return }
        let e: Int32 = lock.withLock { apply(rel, v) }
        if e != 0 { throw Self.error(e, path, v) }
        lock.withLock { writes.append((rel, v)) }
        afterWrite?(rel, v)
    }

    static func error(_ e: Int32, _ path: String, _ v: String) -> HostPCIError {
        HostPCIError(code: .io, message: "writing \(v.debugDescription) to \(path) failed: \(String(cString: strerror(e)))", errno: e)
    }

    // MARK: the kernel's reactions (called with the lock held); return an errno or 0

    private func apply(_ rel: String, _ v: String) -> Int32 {
        let parts = rel.split(separator: "/").map(String.init)
        if rel == "bus/pci/drivers_probe" {
            guard let a = PCIAddress.fromSysfsName(v), fixture.devicePath(a) != nil else { return ENODEV }
            if driver(of: a) == nil, canProbe(a) {
                let want = override(of: a) ?? naturalDrivers[a]
                if let want, driverExists(want), !(probeFailures[want]?.contains(a) ?? false) { bind(a, want) }
            }
            return 0
        }
        if parts.count == 5, parts[0] == "bus", parts[1] == "pci", parts[2] == "drivers" {
            let driver = parts[3]
            guard driverExists(driver) else { return ENOENT }
            guard let a = PCIAddress.fromSysfsName(v), fixture.devicePath(a) != nil else { return ENODEV }
            switch parts[4] {
            case "unbind":
                guard self.driver(of: a) == driver else { return ENODEV }
                unbind(a)
                return 0
            case "bind":
                if self.driver(of: a) != nil { return EBUSY }
                if let o = override(of: a), o != driver { return ENODEV }
                guard canProbe(a) else { return ENODEV }
                if probeFailures[driver]?.contains(a) ?? false { return ENODEV }
                bind(a, driver)
                return 0
            default: return EACCES
            }
        }
        // A device attribute: bus/pci/devices/ADDR/NAME
        guard parts.count == 5, parts[0] == "bus", parts[1] == "pci", parts[2] == "devices",
              let a = PCIAddress.fromSysfsName(parts[3]), let dir = fixture.devicePath(a) else { return ENOENT }
        let attr = parts[4]
        switch attr {
        case "driver_override":
            writeFile(dir + "/driver_override", (v.isEmpty ? "(null)" : v) + "\n")
        case "sriov_drivers_autoprobe":
            guard v == "0" || v == "1" else { return EINVAL }
            writeFile(dir + "/sriov_drivers_autoprobe", v + "\n")
        case "sriov_numvfs":
            return setNumVFs(a, dir: dir, v)
        case "reset", "remove", "rescan":
            break
        default:
            return EACCES
        }
        return 0
    }

    private func setNumVFs(_ pf: PCIAddress, dir: String, _ v: String) -> Int32 {
        guard let n = Int(v), n >= 0 else { return EINVAL }
        let total = Int(readFile(dir + "/sriov_totalvfs") ?? "") ?? 0
        let current = Int(readFile(dir + "/sriov_numvfs") ?? "") ?? 0
        guard n <= total else { return ERANGE }
        if n == current { return 0 }
        if n != 0 && current != 0 { return EBUSY }
        if n == 0 {
            for i in 0..<current {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/virtfn\(i)"),
                      let vf = PCIAddress.fromSysfsName(URL(fileURLWithPath: target).lastPathComponent) else { continue }
                if driver(of: vf) != nil { unbind(vf) }
                fixture.removeDevice(vf)
                try? FileManager.default.removeItem(atPath: dir + "/virtfn\(i)")
            }
        } else {
            guard let template = vfTemplates[pf] else { return EIO }
            let autoprobe = readFile(dir + "/sriov_drivers_autoprobe") != "0"
            for i in 0..<n {
                var vf = template(i)
                vf.physfn = pf
                vf.vfIndex = i
                vf.driver = nil
                guard (try? fixture.add(vf)) != nil else { return EIO }
                if autoprobe, let natural = naturalDrivers[vf.address], driverExists(natural) { bind(vf.address, natural) }
            }
        }
        writeFile(dir + "/sriov_numvfs", "\(n)\n")
        return 0
    }

    private func driverExists(_ d: String) -> Bool {
        FileManager.default.fileExists(atPath: fixture.root.path + "/bus/pci/drivers/" + d)
    }

    private func driver(of a: PCIAddress) -> String? {
        guard let dir = fixture.devicePath(a), let t = SysfsFixture.readLink(dir + "/driver") else { return nil }
        return t.split(separator: "/").last.map(String.init)
    }

    /// The kernel's `pci_device_can_probe`: a VF whose PF has `sriov_drivers_autoprobe` off is
    /// probed only by the driver its `driver_override` names (a bind without one fails with ENODEV).
    private func canProbe(_ a: PCIAddress) -> Bool {
        guard let dir = fixture.devicePath(a), let target = SysfsFixture.readLink(dir + "/physfn") else { return true }
        let pfDir = "/" + SysfsFixture.components(target.hasPrefix("/") ? target : dir + "/" + target).joined(separator: "/")
        return readFile(pfDir + "/sriov_drivers_autoprobe") != "0" || override(of: a) != nil
    }

    private func override(of a: PCIAddress) -> String? {
        guard let dir = fixture.devicePath(a), let o = readFile(dir + "/driver_override"), !o.isEmpty, o != "(null)" else { return nil }
        return o
    }

    private func bind(_ a: PCIAddress, _ driver: String) { try? fixture.setDriver(a, driver) }
    private func unbind(_ a: PCIAddress) { try? fixture.setDriver(a, nil) }

    private func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n >= 0 else { return nil }
        return String(decoding: bytes[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Like sysfs, the value is there at once and nothing waits for a disk: a plain write(2), not
    /// `Data.write`, which fsyncs (two fsyncs per claim+release, more than the daemon's own store).
    /// Written over and cut to length rather than opened with O_TRUNC: ext4 starts writeback when a
    /// file truncated to zero is closed.
    private func writeFile(_ path: String, _ text: String) {
        let fd = open(path, O_WRONLY | O_CREAT, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        if n == bytes.count { _ = ftruncate(fd, off_t(n)) }
    }
}
