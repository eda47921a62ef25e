/// The I/O port bus: routes `in`/`out` exits to devices by port range. Ports nobody claims read
/// as 0 (so probes for absent UARTs and the like fail fast) and ignore writes.
public final class IOBus: @unchecked Sendable {
    struct Entry {
        let base: UInt16
        let count: UInt16
        let device: PortIODevice
    }

    private var entries: [Entry] = []
    private let lock = Lock()

    public init() {}

    /// Claims `count` ports from `base` for `device`. Set up before the vCPUs run.
    public func register(_ device: PortIODevice, base: UInt16, count: UInt16) {
        precondition(!entries.contains { base < $0.base &+ $0.count && $0.base < base &+ count }, "overlapping port ranges")
        entries.append(Entry(base: base, count: count, device: device))
    }

    @inline(__always)
    func find(_ port: UInt16) -> Entry? {
        for e in entries where port >= e.base && port - e.base < e.count { return e }
        return nil
    }

    /// Runs `body` with the devices' lock held (for input arriving from outside a vCPU).
    public func withLock<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }

    /// An `out` of `data` (one item; string I/O is split by the caller).
    @inline(__always)
    public func write(port: UInt16, data: UnsafeRawBufferPointer) {
        guard let e = find(port) else { return }
        lock.withLock { e.device.write(offset: port - e.base, data: data) }
    }

    /// An `in` into `data`.
    @inline(__always)
    public func read(port: UInt16, data: UnsafeMutableRawBufferPointer) {
        guard let e = find(port) else {
            data.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        lock.withLock { e.device.read(offset: port - e.base, data: data) }
    }
}
