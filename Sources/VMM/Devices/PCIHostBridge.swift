/// PCI configuration access mechanism #1 (ports 0xCF8 address, 0xCFC–0xCFF data) with a host
/// bridge at 00:00.0. Other functions read as absent (all ones) until devices are attached.
public final class PCIHostBridge: PortIODevice {
    public static let addressPort: UInt16 = 0xCF8
    /// Vendor 0x8086, device 0x0D57: the host bridge id Cloud Hypervisor also shows.
    public static let vendorID: UInt16 = 0x8086, deviceID: UInt16 = 0x0D57

    private var address: UInt32 = 0
    private var hostConfig = [UInt8](repeating: 0, count: 256)

    public init() {
        store16(0x00, Self.vendorID)
        store16(0x02, Self.deviceID)
        hostConfig[0x08] = 0x00                 // revision
        hostConfig[0x0B] = 0x06                 // class: bridge
        hostConfig[0x0A] = 0x00                 // subclass: host bridge
        hostConfig[0x0E] = 0x00                 // header type 0
    }

    private func store16(_ o: Int, _ v: UInt16) {
        hostConfig[o] = UInt8(v & 0xFF); hostConfig[o + 1] = UInt8(v >> 8)
    }

    /// The configuration register the current address selects on the host bridge, or nil.
    private var selectedHostRegister: Int? {
        guard address & 0x8000_0000 != 0 else { return nil }
        let bus = (address >> 16) & 0xFF, device = (address >> 11) & 0x1F, function = (address >> 8) & 0x7
        guard bus == 0, device == 0, function == 0 else { return nil }
        return Int(address & 0xFC)
    }

    // Ports 0xCF8…0xCFF: offsets 0–3 address, 4–7 data.
    public func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {
        if offset < 4 {
            let shift = UInt32(offset) * 8
            data.storeLittleEndianValue(UInt64(address >> shift))
            return
        }
        let byte = Int(offset - 4)
        guard let reg = selectedHostRegister else {
            data.initializeMemory(as: UInt8.self, repeating: 0xFF)
            return
        }
        for i in 0..<data.count { data[i] = reg + byte + i < 256 ? hostConfig[reg + byte + i] : 0xFF }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        if offset < 4 {
            guard offset == 0, data.count == 4 else { return }
            address = UInt32(truncatingIfNeeded: data.littleEndianBytes)
            return
        }
        // The host bridge's registers are read-only here (BARs: none; command: ignored).
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
