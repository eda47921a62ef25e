/// The I/O port bus: routes `in`/`out` exits to devices by port range. Ports nobody claims read
/// as 0 (so probes for absent UARTs and the like fail fast) and ignore writes.
///
/// One lock (shared with the MMIO bus) serializes every device access, so device code runs one
/// access at a time and may move its own ranges (a guest relocating an I/O BAR) while it holds it.
public final class IOBus: @unchecked Sendable {
    struct Entry {
        let base: UInt16
        let count: UInt16
        let device: PortIODevice
    }

    private var entries: [Entry] = []
    let lock: Lock

    public convenience init() { self.init(lock: Lock()) }

    init(lock: Lock) { self.lock = lock }

    /// Claims `count` ports from `base` for `device`. Set up before the vCPUs run.
    public func register(_ device: PortIODevice, base: UInt16, count: UInt16) {
        lock.withLock { precondition(registerHoldingLock(device, base: base, count: count), "overlapping or invalid port range") }
    }

    /// `register` for device code that already holds the lock. Returns false (and claims
    /// nothing) when the range overlaps another or wraps.
    @discardableResult
    func registerHoldingLock(_ device: PortIODevice, base: UInt16, count: UInt16) -> Bool {
        guard count > 0, UInt32(base) + UInt32(count) <= 0x1_0000,
              !entries.contains(where: { base < $0.base &+ $0.count && $0.base < base &+ count }) else { return false }
        entries.append(Entry(base: base, count: count, device: device))
        return true
    }

    /// Drops every range of `device` (the lock held).
    func unregisterHoldingLock(_ device: PortIODevice) {
        entries.removeAll { $0.device === device }
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
        lock.withLock {
            guard let e = find(port) else { return }
            e.device.write(offset: port - e.base, data: data)
        }
    }

    /// An `in` into `data`.
    @inline(__always)
    public func read(port: UInt16, data: UnsafeMutableRawBufferPointer) {
        lock.withLock {
            guard let e = find(port) else {
                data.initializeMemory(as: UInt8.self, repeating: 0)
                return
            }
            e.device.read(offset: port - e.base, data: data)
        }
    }
}

/// A device with guest-physical MMIO ranges (the trapped parts of a passed-through BAR).
public protocol MMIODevice: AnyObject {
    /// A read of `data.count` bytes at `offset` into the device's range `region`: fill `data`.
    func mmioRead(region: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer)
    func mmioWrite(region: Int, offset: UInt64, data: UnsafeRawBufferPointer)
}

/// The MMIO bus: guest-physical ranges with no memory slot behind them, routed to devices.
/// Unclaimed addresses read as all ones and ignore writes. Shares the I/O bus's lock.
public final class MMIOBus: @unchecked Sendable {
    struct Entry {
        let base: UInt64
        let size: UInt64
        let device: MMIODevice
        let region: Int
    }

    private var entries: [Entry] = []
    let lock: Lock

    init(lock: Lock) { self.lock = lock }

    /// Puts `device`'s range `region` at `base` (nil: removes it). Called with the lock held
    /// (from a configuration write) or before the vCPUs run. Returns false (and places nothing)
    /// when the range would overlap another device's or wraps.
    @discardableResult
    func placeHoldingLock(_ device: MMIODevice, region: Int, base: UInt64?, size: UInt64) -> Bool {
        entries.removeAll { $0.device === device && $0.region == region }
        guard let base else { return true }
        guard size > 0, base <= UInt64.max - size + 1,
              !entries.contains(where: { base < $0.base &+ $0.size && $0.base < base &+ size }) else { return false }
        entries.append(Entry(base: base, size: size, device: device, region: region))
        return true
    }

    /// Where `device`'s ranges are now (tests).
    func ranges(of device: MMIODevice) -> [(region: Int, base: UInt64, size: UInt64)] {
        lock.withLock { entries.filter { $0.device === device }.map { ($0.region, $0.base, $0.size) } }
    }

    public func read(address: UInt64, data: UnsafeMutableRawBufferPointer) {
        lock.withLock {
            for e in entries where address >= e.base && address - e.base < e.size {
                e.device.mmioRead(region: e.region, offset: address - e.base, data: data)
                return
            }
            data.initializeMemory(as: UInt8.self, repeating: 0xFF)
        }
    }

    public func write(address: UInt64, data: UnsafeRawBufferPointer) {
        lock.withLock {
            for e in entries where address >= e.base && address - e.base < e.size {
                e.device.mmioWrite(region: e.region, offset: address - e.base, data: data)
                return
            }
        }
    }
}
