import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// When the machine's milestones happened, on CLOCK_BOOTTIME (what passage-vmm --stats prints):
/// the vCPU threads started (the first KVM_RUN), and the guest's first byte on the serial
/// console (a bzImage's decompressor prints nothing on `console=ttyS0`, so this is the kernel
/// proper's first console line — with `quiet`, possibly as late as its last one). Nanoseconds,
/// 0 until it happens; each set once.
public final class MachineTimeline: Sendable {
    private let started = Atomic<Int64>(0)
    private let firstConsoleByte = Atomic<Int64>(0)

    public init() {}

    /// CLOCK_BOOTTIME in nanoseconds.
    public static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    func markStarted() { _ = started.compareExchange(expected: 0, desired: Self.now(), ordering: .relaxed) }

    @inline(__always)
    func markConsoleByte() {
        if firstConsoleByte.load(ordering: .relaxed) == 0 {
            _ = firstConsoleByte.compareExchange(expected: 0, desired: Self.now(), ordering: .relaxed)
        }
    }

    /// Nanoseconds on CLOCK_BOOTTIME, nil if not (yet) reached.
    public var startedAt: Int64? { nonZero(started.load(ordering: .relaxed)) }
    public var firstConsoleByteAt: Int64? { nonZero(firstConsoleByte.load(ordering: .relaxed)) }

    private func nonZero(_ v: Int64) -> Int64? { v == 0 ? nil : v }
}
