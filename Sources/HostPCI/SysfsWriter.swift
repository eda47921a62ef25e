import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How Passage changes sysfs. The real one writes files; tests use a simulated kernel that writes
/// into a fixture tree and reacts the way the kernel would (binding, unbinding, creating VFs).
public protocol SysfsWriter: Sendable {
    /// Writes `value` to the attribute at `path` (a path under the writer's root).
    /// Throws `HostPCIError` with the errno when the kernel refuses.
    func write(_ value: String, to path: String) throws(HostPCIError)
}

/// Writes sysfs attributes with open(2)/write(2), so the kernel's errno reaches the caller.
///
/// Fault injection (tests on the real kernel): `PASSAGE_INJECT_WRITE_FAILURE=N[:ERRNO]` makes the
/// Nth write of the process fail with ERRNO (default EIO) before it reaches the kernel, so that the
/// lab can show a failure midway leaves every device as it was. `PASSAGE_INJECT_WRITE_DELAY_MS=N`
/// sleeps N ms before every write, so that crash tests can kill a process reliably in the middle of
/// a multi-step change (the kernel's own work is over in microseconds in the lab).
///
/// Guard: when the environment has `PASSAGE_FORBID_HOST_SYSFS_WRITES=1` (the test suite sets it),
/// any write under the machine's real `/sys` is refused before it happens: tests must never
/// change the build machine's own devices.
public struct KernelSysfsWriter: SysfsWriter {
    public let root: SysfsRoot

    public init(root: SysfsRoot) {
        self.root = root
    }

    public static var hostWritesForbidden: Bool {
        getenv("PASSAGE_FORBID_HOST_SYSFS_WRITES").map { String(cString: $0) == "1" } ?? false
    }

    private static let writeCount = Mutex(0)
    private static let performed = Mutex(0)

    /// Writes that reached the kernel in this process (for metrics: a policy already satisfied
    /// must cost none).
    public static var writesPerformed: Int { performed.withLock { $0 } }

    /// The errno to fail this write with, when PASSAGE_INJECT_WRITE_FAILURE names it.
    static func injectedFailure() -> Int32? {
        guard let spec = getenv("PASSAGE_INJECT_WRITE_FAILURE").map({ String(cString: $0) }), !spec.isEmpty else { return nil }
        let parts = spec.split(separator: ":")
        guard let n = Int(parts[0]) else { return nil }
        let e = parts.count > 1 ? Int32(parts[1]) ?? EIO : EIO
        let count = writeCount.withLock { c in c += 1; return c }
        return count == n ? e : nil
    }

    static let injectedDelay: UInt32? = getenv("PASSAGE_INJECT_WRITE_DELAY_MS").flatMap { UInt32(String(cString: $0)) }.flatMap { $0 > 0 ? min($0, 10_000) : nil }
    private static let delaySuspended = Atomic<Bool>(false)

    /// Turns PASSAGE_INJECT_WRITE_DELAY_MS off (and on again) for the process: passaged's start-up
    /// reconciliation runs without it, so that a crash test's restart is timed with the kernel's
    /// real speed, not the delay that made the kill land inside an operation.
    public static func suspendInjectedDelay(_ suspended: Bool) { delaySuspended.store(suspended, ordering: .relaxed) }

    public func write(_ value: String, to path: String) throws(HostPCIError) {
        guard path.hasPrefix(root.path + "/") else {
            throw HostPCIError(code: .io, message: "refusing to write \(path): it is outside the sysfs root \(root.path)")
        }
        if Self.hostWritesForbidden && (root.isSystem || path.hasPrefix("/sys/")) {
            throw HostPCIError(code: .io, message: "refusing to write \(path): writes to the host's /sys are forbidden here (PASSAGE_FORBID_HOST_SYSFS_WRITES=1)")
        }
        if let ms = Self.injectedDelay, !Self.delaySuspended.load(ordering: .relaxed) { usleep(ms * 1000) }
        if let injected = Self.injectedFailure() {
            throw HostPCIError(code: .io, message: "writing \(value.debugDescription) to \(path) failed: \(String(cString: strerror(injected))) (injected by PASSAGE_INJECT_WRITE_FAILURE)", errno: injected)
        }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            throw HostPCIError(code: .io, message: "cannot open \(path) for writing: \(String(cString: strerror(e)))", errno: e)
        }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else {
            let e = n < 0 ? errno : EIO
            throw HostPCIError(code: .io, message: "writing \(value.debugDescription) to \(path) failed: \(String(cString: strerror(e)))", errno: e)
        }
        Self.performed.withLock { $0 += 1 }
    }
}
