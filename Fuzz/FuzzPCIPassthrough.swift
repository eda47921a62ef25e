// libFuzzer target: the passthrough device's configuration-space virtualization and MSI-X table
// emulation (VMM/PCI/PassthroughConfigSpace.swift, MSIXTable.swift) — what a hostile guest drives.
// The input is a stream of accesses (kind, offset, size, value); whatever it is:
// - no trap, no hang;
// - the device's identity, class, header, BAR, ROM and hidden-capability bytes and its whole
//   extended space never receive a write;
// - BARs always read back as address bits of their size plus their type bits (unused BARs 0);
// - the MSI-X table holds only what valid (aligned 4/8-byte, in-table) writes put there;
// - the virtual MSI capability never enables more vectors than the device raises, keeps its
//   address dword-aligned and only implemented mask bits.

final class Device: PCIConfigBackend {
    var bytes = [UInt8](repeating: 0, count: 4096)
    func configRead(offset: Int, size: Int) -> UInt32 {
        (0..<size).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }
    func configWrite(offset: Int, size: Int, value: UInt32) {
        precondition(offset >= 0 && offset + size <= 0x100, "write at \(offset) reached the device outside 0…0xFF")
        let forbidden: [Range<Int>] = [0x00..<0x04, 0x08..<0x0C, 0x0E..<0x40, 0x50..<0x70]
        precondition(!forbidden.contains { $0.overlaps(offset..<(offset + size)) }, "write at 0x\(String(offset, radix: 16)) reached the device")
        for i in 0..<size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }
    static func nvmeVF() -> Device {
        let d = Device()
        func put(_ o: Int, _ v: [UInt8]) { d.bytes.replaceSubrange(o..<(o + v.count), with: v) }
        put(0x00, [0x36, 0x1B, 0x10, 0x00]); put(0x06, [0x10, 0x00]); put(0x08, [0x02, 0x02, 0x08, 0x01])
        put(0x10, [0x04, 0, 0, 0]); put(0x20, [0x01, 0, 0, 0]); put(0x34, [0x40])
        put(0x40, [0x01, 0x50, 0x03, 0x00]); put(0x50, [0x05, 0x68, 0x86, 0x01]); put(0x68, [0x07, 0x70, 0x08, 0xAA])
        put(0x70, [0x11, 0x80, 0x09, 0x00, 0x00, 0x20, 0, 0, 0x00, 0x30, 0, 0]); put(0x80, [0x10, 0x00, 0x02, 0x00])
        return d
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeBufferPointer(start: data, count: size)
    let device = Device.nvmeVF()
    let bars = [PCIBARDescription(index: 0, kind: .memory64, prefetchable: false, size: 0x4000),
                PCIBARDescription(index: 4, kind: .io, prefetchable: false, size: 32)]
    let config = PassthroughConfigSpace(backend: device, bars: bars, intxLine: 17)
    config.msiPendingProbe = { $0 % 3 == 0 }
    let table = MSIXTable(count: 10)
    var shadow = table.entries
    var i = 0
    func take(_ n: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<n where i + k < input.count { v |= UInt64(input[i + k]) << (8 * UInt64(k)) }
        i += n
        return v
    }
    while i < input.count {
        let kind = take(1) % 6
        let offset = Int(take(2) & 0x1FFF) - 0x100
        let sizes = [1, 2, 4, 8, 3, 0]
        let width = sizes[Int(take(1) % 6)]
        let value = take(8)
        switch kind {
        case 0: _ = config.read(offset: offset, size: width)
        case 1: config.write(offset: offset, size: width, value: UInt32(truncatingIfNeeded: value))
        case 2:
            _ = table.readTable(offset: UInt64(bitPattern: Int64(offset)), size: width)
        case 3:
            let o = UInt64(bitPattern: Int64(offset))
            table.writeTable(offset: o, size: width, value: value)
            if (width == 4 || width == 8) && o % UInt64(width) == 0 && o < 160 && 160 - o >= UInt64(width) {
                for w in 0..<(width / 4) {
                    let at = o + UInt64(4 * w), e = Int(at / 16), word = UInt32(truncatingIfNeeded: value >> (32 * UInt64(w)))
                    switch at % 16 {
                    case 0: shadow[e].addressLow = word & ~3
                    case 4: shadow[e].addressHigh = word
                    case 8: shadow[e].data = word
                    default: shadow[e].control = word & 1
                    }
                }
            }
        case 4: _ = table.readPBA(offset: UInt64(bitPattern: Int64(offset)), size: width)
        default: table.setControl(enabled: value & 1 != 0, functionMasked: value & 2 != 0)
        }
        precondition(table.entries == shadow, "the MSI-X table changed outside a valid write")
        let bar0 = config.read(offset: 0x10, size: 4)
        precondition(bar0 & 0x3FF0 == 0 && bar0 & 0xF == 0x4, "BAR0 reads 0x\(String(bar0, radix: 16))")
        let bar4 = config.read(offset: 0x20, size: 4)
        precondition(bar4 & 0x1F == 0x1, "BAR4 reads 0x\(String(bar4, radix: 16))")
        precondition(config.read(offset: 0x18, size: 4) == 0 && config.read(offset: 0x30, size: 4) == 0, "an unused BAR or the ROM is visible")
        let msi = config.msiState
        precondition(msi.enabledLog2 <= 3 && msi.address & 3 == 0 && msi.mask & ~0xFF == 0, "MSI state \(msi)")
    }
    return 0
}
