/// A function on the host bridge's bus (bus 0, function 0 of its slot). Configuration accesses
/// arrive with the device lock held: `size` is 1, 2 or 4 and `offset` is aligned to it.
public protocol PCIFunction: AnyObject {
    func configRead(offset: Int, size: Int) -> UInt32
    func configWrite(offset: Int, size: Int, value: UInt32)
}

/// PCI configuration access mechanism #1 (ports 0xCF8 address, 0xCFC–0xCFF data) with a host
/// bridge at 00:00.0 and the functions attached to slots 1…31 of bus 0. Everything else reads as
/// absent (all ones). Through port I/O only the first 256 bytes of a function are reachable.
public final class PCIHostBridge: PortIODevice {
    public static let addressPort: UInt16 = 0xCF8
    /// Vendor 0x8086, device 0x0D57: the host bridge id Cloud Hypervisor also shows.
    public static let vendorID: UInt16 = 0x8086, deviceID: UInt16 = 0x0D57

    private var address: UInt32 = 0
    private var hostConfig = [UInt8](repeating: 0, count: 256)
    private var slots = [PCIFunction?](repeating: nil, count: 32)

    public init() {
        store16(0x00, Self.vendorID)
        store16(0x02, Self.deviceID)
        hostConfig[0x08] = 0x00                 // revision
        hostConfig[0x0B] = 0x06                 // class: bridge
        hostConfig[0x0A] = 0x00                 // subclass: host bridge
        hostConfig[0x0E] = 0x00                 // header type 0
    }

    /// Puts `function` in `slot` (1…31) of bus 0. Set up before the vCPUs run.
    public func attach(_ function: PCIFunction, slot: Int) {
        precondition((1..<32).contains(slot) && slots[slot] == nil, "PCI slot \(slot) is taken or invalid")
        slots[slot] = function
    }

    /// The IOAPIC pin (GSI) INTA of `slot` is wired to, as the DSDT's `_PRT` tells the guest:
    /// 16…23 in turn, so the first eight devices have a line each (beyond, lines are shared,
    /// which level-triggered INTx allows).
    public static func intxGSI(slot: Int) -> UInt32 { 16 + UInt32(slot % 8) }

    /// The first free slot, or nil when all 31 are taken.
    public var freeSlot: Int? { (1..<32).first { slots[$0] == nil } }

    private func store16(_ o: Int, _ v: UInt16) {
        hostConfig[o] = UInt8(v & 0xFF); hostConfig[o + 1] = UInt8(v >> 8)
    }

    /// What the current address selects: the host bridge (nil function) or an attached function, and the register.
    private var selected: (function: PCIFunction?, register: Int)? {
        guard address & 0x8000_0000 != 0 else { return nil }
        let bus = (address >> 16) & 0xFF, device = Int((address >> 11) & 0x1F), function = (address >> 8) & 0x7
        guard bus == 0, function == 0 else { return nil }
        let register = Int(address & 0xFC)
        if device == 0 { return (nil, register) }
        guard let f = slots[device] else { return nil }
        return (f, register)
    }

    // Ports 0xCF8…0xCFF: offsets 0–3 address, 4–7 data.
    public func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {
        if offset < 4 {
            let shift = UInt32(offset) * 8
            data.storeLittleEndianValue(UInt64(address >> shift))
            return
        }
        let byte = Int(offset - 4), size = data.count
        guard let (function, reg) = selected, [1, 2, 4].contains(size), byte % size == 0 else {
            data.initializeMemory(as: UInt8.self, repeating: 0xFF)
            return
        }
        if let function {
            data.storeLittleEndianValue(UInt64(function.configRead(offset: reg + byte, size: size)))
            return
        }
        for i in 0..<size { data[i] = hostConfig[reg + byte + i] }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        if offset < 4 {
            guard offset == 0, data.count == 4 else { return }
            address = UInt32(truncatingIfNeeded: data.littleEndianBytes)
            return
        }
        let byte = Int(offset - 4), size = data.count
        guard let (function, reg) = selected, let function, [1, 2, 4].contains(size), byte % size == 0 else { return }
        // (The host bridge's own registers are read-only here: no BARs, command ignored.)
        function.configWrite(offset: reg + byte, size: size, value: UInt32(truncatingIfNeeded: data.littleEndianBytes))
    }
}

extension UnsafeRawBufferPointer {
    var littleEndianBytes: UInt64 {
        var v: UInt64 = 0
        for i in 0..<Swift.min(count, 8) { v |= UInt64(self[i]) << (8 * UInt64(i)) }
        return v
    }
}

extension UnsafeMutableRawBufferPointer {
    func storeLittleEndianValue(_ value: UInt64) {
        for i in 0..<Swift.min(count, 8) { self[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
