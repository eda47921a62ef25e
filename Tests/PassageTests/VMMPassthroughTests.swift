import Testing
@testable import VMM

/// A function's configuration space as recorded from a device (here: the shape of QEMU's NVMe
/// VF in the lab), answering like VFIO's config region and recording what reaches the device.
final class RecordedConfig: PCIConfigBackend {
    var bytes = [UInt8](repeating: 0, count: 4096)
    var writes: [(offset: Int, size: Int, value: UInt32)] = []

    func configRead(offset: Int, size: Int) -> UInt32 {
        (0..<size).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    func configWrite(offset: Int, size: Int, value: UInt32) {
        writes.append((offset, size, value))
        for i in 0..<size { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    func put(_ offset: Int, _ values: [UInt8]) { bytes.replaceSubrange(offset..<(offset + values.count), with: values) }
    func put16(_ offset: Int, _ v: UInt16) { put(offset, [UInt8(v & 0xFF), UInt8(v >> 8)]) }
    func put32(_ offset: Int, _ v: UInt32) { put(offset, (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }) }

    /// NVMe VF: 1b36:0010 class 010802; BAR0 64-bit 16 KiB (MSI-X table at 0x2000, PBA at 0x3000,
    /// 10 vectors), BAR4 an I/O BAR of 32 ports; capabilities 0x40 PM → 0x50 MSI (64-bit, 4 vectors) → 0x60 PCI-X (hidden) →
    /// 0x70 MSI-X → 0x80 PCIe; an SR-IOV-like extended capability at 0x100; ROM BAR present.
    static func nvmeVF() -> RecordedConfig {
        let c = RecordedConfig()
        c.put16(0x00, 0x1B36); c.put16(0x02, 0x0010)
        c.put16(0x04, 0x0000); c.put16(0x06, 0x0010)               // status: capability list
        c.put(0x08, [0x02, 0x02, 0x08, 0x01])                      // revision 2, class 01 08 02
        c.put(0x0E, [0x80])                                        // header type 0, "multi-function" bit set
        c.put32(0x10, 0x0000_0004)                                 // BAR0: 64-bit memory
        c.put32(0x20, 0x0000_0001)                                 // BAR4: I/O
        c.put32(0x30, 0xFEB0_0000)                                 // expansion ROM (must stay hidden)
        c.put(0x34, [0x40])
        c.put(0x3D, [0x01])                                        // INTA
        c.put(0x40, [0x01, 0x50, 0x03, 0x00]); c.put16(0x44, 0x0008)          // PM
        c.put(0x50, [0x05, 0x60, 0x84, 0x00])                                 // MSI: 64-bit, 4 vectors, no mask bits
        c.put(0x60, [0x07, 0x70, 0x08, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE])         // PCI-X (hidden)
        c.put(0x70, [0x11, 0x80]); c.put16(0x72, 0x0009)                      // MSI-X: 10 vectors
        c.put32(0x74, 0x0000_2000); c.put32(0x78, 0x0000_3000)                // table BAR0+0x2000, PBA BAR0+0x3000
        c.put(0x80, [0x10, 0x00, 0x02, 0x00]); c.put32(0x84, 0x0000_8000)     // PCIe v2, device caps
        c.put16(0x88, 0x2810)                                                 // device control
        c.put32(0x100, 0x0001_0010)                                           // extended capability (SR-IOV id 0x10)
        return c
    }

    /// An AHCI-like function with MSI but no MSI-X: 8086:2922 class 010601, BAR4 I/O 32 ports,
    /// BAR5 32-bit memory 4 KiB, INTA; capabilities 0x80 MSI (32-bit address, per-vector
    /// masking, 8 vectors) → 0xA8 SATA (hidden).
    static func msiOnly() -> RecordedConfig {
        let c = RecordedConfig()
        c.put16(0x00, 0x8086); c.put16(0x02, 0x2922)
        c.put16(0x06, 0x0010)
        c.put(0x08, [0x02, 0x01, 0x06, 0x01])
        c.put32(0x20, 0x0000_0001); c.put32(0x24, 0x0000_0000)
        c.put(0x34, [0x80])
        c.put(0x3D, [0x01])
        c.put(0x80, [0x05, 0xA8]); c.put16(0x82, 0x0106)                      // MSI: PVM, MMC 3
        c.put32(0x8C, 0x0000_00F0)                                            // the device's own mask bits (not shown)
        c.put(0xA8, [0x12, 0x00, 0x10, 0x00])                                 // SATA (hidden)
        return c
    }

    static let bars = [
        PCIBARDescription(index: 0, kind: .memory64, prefetchable: false, size: 0x4000),
        PCIBARDescription(index: 4, kind: .io, prefetchable: false, size: 32),
    ]
}

@Suite("VMM passthrough: configuration space virtualization")
struct PassthroughConfigSpaceTests {
    func make() -> (RecordedConfig, PassthroughConfigSpace) {
        let dev = RecordedConfig.nvmeVF()
        return (dev, PassthroughConfigSpace(backend: dev, bars: RecordedConfig.bars))
    }

    @Test("BAR types come from the device's registers, sizes from VFIO; the upper half of a 64-bit BAR is not a BAR")
    func describeBARs() {
        let dev = RecordedConfig.nvmeVF()
        #expect(PCIBARDescription.describe(config: dev, sizes: [0: 0x4000, 1: 0, 4: 32]) == RecordedConfig.bars)
        #expect(PCIBARDescription.describe(config: dev, sizes: [0: 0x3000]).isEmpty)   // not a power of two: refused
    }

    @Test("identity and class pass through; header type shows one function; BIST, CIS, ROM and the interrupt pin read 0")
    func header() {
        let (_, c) = make()
        #expect(c.read(offset: 0, size: 4) == 0x0010_1B36)
        #expect(c.read(offset: 0x08, size: 4) == 0x0108_0202)
        #expect(c.read(offset: 0x0E, size: 1) == 0x00)
        #expect(c.read(offset: 0x0C, size: 4) & 0xFFFF_0000 == 0)
        #expect(c.read(offset: 0x30, size: 4) == 0)
        #expect(c.read(offset: 0x3D, size: 1) == 0)
    }

    @Test("BAR sizing: all ones read back as the size mask with the type bits; unimplemented BARs stay 0")
    func sizing() {
        let (dev, c) = make()
        for r in 0..<6 { c.write(offset: 0x10 + 4 * r, size: 4, value: 0xFFFF_FFFF) }
        #expect(c.read(offset: 0x10, size: 4) == 0xFFFF_C004)     // 16 KiB, 64-bit
        #expect(c.read(offset: 0x14, size: 4) == 0xFFFF_FFFF)     // upper half: all address bits writable
        #expect(c.read(offset: 0x18, size: 4) == 0)
        #expect(c.read(offset: 0x1C, size: 4) == 0)
        #expect(c.read(offset: 0x20, size: 4) == 0xFFFF_FFE1)     // 32 ports, I/O
        #expect(c.read(offset: 0x24, size: 4) == 0)
        c.write(offset: 0x30, size: 4, value: 0xFFFF_FFFF)       // ROM sizing: hidden
        #expect(c.read(offset: 0x30, size: 4) == 0)
        #expect(dev.writes.isEmpty, "BAR and ROM writes never reach the device")
    }

    @Test("moving a BAR and switching decoding tell the VMM; the command register reaches the device")
    func relocation() {
        let (dev, c) = make()
        var changes = 0
        c.onMappingChange = { changes += 1 }
        c.write(offset: 0x10, size: 4, value: 0xC000_4000)
        c.write(offset: 0x14, size: 4, value: 0x0000_0001)
        #expect(c.address(ofBAR: 0) == 0x1_C000_4000 && changes == 2)
        c.write(offset: 0x10, size: 4, value: 0xC000_4123)       // low bits are not address bits
        #expect(c.address(ofBAR: 0) == 0x1_C000_4000 && changes == 2)
        c.write(offset: 0x20, size: 2, value: 0xC0E5)            // 16-bit write to an I/O BAR
        #expect(c.address(ofBAR: 4) == 0xC0E0)
        c.write(offset: 0x04, size: 2, value: 0x0006)            // memory decoding + bus master
        #expect(c.memoryDecoding && !c.ioDecoding && changes == 4)
        #expect(c.read(offset: 0x04, size: 2) == 0x0006)
        #expect(dev.writes.last.map { [$0.offset, $0.size, Int($0.value)] } == [0x04, 2, 0x0006])
        c.write(offset: 0x04, size: 2, value: 0x0006)            // same value: no remap
        #expect(changes == 4)
        c.assign(bar: 0, address: 0xC000_0000)
        #expect(c.read(offset: 0x10, size: 4) == 0xC000_0004 && c.read(offset: 0x14, size: 4) == 0)
    }

    @Test("the capability list keeps PM, MSI, MSI-X and PCIe, re-linked; hidden capabilities read 0 and ignore writes")
    func capabilities() {
        let (dev, c) = make()
        var ids: [UInt32] = [], p = Int(c.read(offset: 0x34, size: 1))
        while p != 0 && ids.count < 10 {
            ids.append(c.read(offset: p, size: 1))
            p = Int(c.read(offset: p + 1, size: 1))
        }
        #expect(ids == [0x01, 0x05, 0x11, 0x10])
        #expect(c.read(offset: 0x60, size: 4) == 0 && c.read(offset: 0x64, size: 4) == 0)
        c.write(offset: 0x52, size: 2, value: 0x0001)            // MSI enable: virtual, never the device's
        #expect(dev.writes.isEmpty && dev.bytes[0x52] == 0x84 && c.msiState.enabled)
        c.write(offset: 0x88, size: 2, value: 0x2830)            // PCIe device control passes (vfio-pci polices it)
        #expect(dev.writes.count == 1 && dev.writes[0].offset == 0x88 && dev.writes[0].size == 2)
        c.write(offset: 0x06, size: 2, value: 0xF900)            // status: write-one-to-clear bits pass
        #expect(dev.writes.count == 2 && dev.writes[1].offset == 0x06)
        c.write(offset: 0x00, size: 4, value: 0xDEAD_BEEF)       // identity: read-only
        #expect(dev.writes.count == 2 && c.read(offset: 0, size: 2) == 0x1B36)
    }

    @Test("vendor-specific capabilities (virtio's modern layout) are kept: reads and writes reach the device")
    func vendorCapabilities() {
        let dev = RecordedConfig()
        dev.put16(0x06, 0x0010); dev.put(0x34, [0x40]); dev.put(0x3D, [0x01])
        dev.put(0x40, [0x09, 0x50, 0x10, 0x01, 0x04, 0x00, 0x00, 0x00])          // virtio common config in BAR 4
        dev.put(0x50, [0x09, 0x00, 0x14, 0x05, 0x00, 0x00, 0x00, 0x00])          // virtio PCI config access window
        let c = PassthroughConfigSpace(backend: dev, bars: [])
        #expect(c.read(offset: 0x34, size: 1) == 0x40 && c.read(offset: 0x41, size: 1) == 0x50 && c.read(offset: 0x51, size: 1) == 0)
        #expect(c.read(offset: 0x40, size: 4) == 0x0110_5009)
        c.write(offset: 0x5C, size: 4, value: 0x1234)
        #expect(dev.writes.count == 1 && dev.writes[0].offset == 0x5C && dev.bytes[0x5C] == 0x34)
        c.write(offset: 0x41, size: 1, value: 0xFF)                                // the list's links stay the VMM's
        #expect(dev.writes.count == 1 && c.read(offset: 0x41, size: 1) == 0x50)
    }

    @Test("MSI-X message control is virtual: enable and function mask are the VMM's, the table size is the device's")
    func msixControl() {
        let (dev, c) = make()
        #expect(c.msix == MSIXLayout(capability: 0x70, tableSize: 10, tableBAR: 0, tableOffset: 0x2000, pbaBAR: 0, pbaOffset: 0x3000))
        var told = 0
        c.onMSIXControlChange = { told += 1 }
        c.write(offset: 0x72, size: 2, value: 0xC000)           // enable + function mask
        #expect(c.msixEnabled && c.msixFunctionMasked && told == 1)
        #expect(c.read(offset: 0x70, size: 4) == 0xC009_8011)   // next pointer 0x80, size 10, both bits
        c.write(offset: 0x73, size: 1, value: 0x80)            // byte write: unmask
        #expect(c.msixEnabled && !c.msixFunctionMasked && told == 2)
        c.write(offset: 0x74, size: 4, value: 0)               // table offset/BIR are read-only
        #expect(c.read(offset: 0x74, size: 4) == 0x2000)
        #expect(dev.writes.isEmpty)
    }

    @Test("extended space reads 0 (SR-IOV and the rest hidden); beyond 4 KiB, odd sizes and misaligned accesses are refused")
    func outOfRange() {
        let (dev, c) = make()
        #expect(c.read(offset: 0x100, size: 4) == 0)
        c.write(offset: 0x100, size: 4, value: 0xFFFF_FFFF)
        #expect(c.read(offset: 0x1000, size: 4) == 0xFFFF_FFFF)
        #expect(c.read(offset: 0xFFE, size: 4) == 0xFFFF_FFFF)
        #expect(c.read(offset: 0x11, size: 2) == 0xFFFF)
        #expect(c.read(offset: 0x10, size: 3) == 0xFF_FFFF)
        #expect(c.read(offset: -4, size: 4) == 0xFFFF_FFFF)
        c.write(offset: 0x2000, size: 4, value: 1)
        c.write(offset: 0x05, size: 2, value: 0xFFFF)
        #expect(c.refusedAccesses == 7 && dev.writes.isEmpty)
    }

    @Test("a seeded storm of random accesses never reaches identity, BAR, ROM or hidden registers of the device")
    func randomAccesses() {
        let (dev, c) = make()
        var rng = SplitMix64(seed: 0x5EED)
        for _ in 0..<20_000 {
            let size = [1, 2, 4, 3, 8][Int(rng.next() % 5)]
            let offset = Int(rng.next() % 0x1100) - 8
            if rng.next() % 2 == 0 {
                c.write(offset: offset, size: size, value: UInt32(truncatingIfNeeded: rng.next()))
            } else {
                _ = c.read(offset: offset, size: size)
            }
        }
        let forbidden: [Range<Int>] = [0x00..<0x04, 0x08..<0x0C, 0x0E..<0x40, 0x50..<0x70, 0x72..<0x7C, 0x100..<0x1000]
        for w in dev.writes {
            #expect(!forbidden.contains { $0.overlaps(w.offset..<(w.offset + w.size)) }, "write reached 0x\(String(w.offset, radix: 16))")
        }
        #expect(c.read(offset: 0, size: 4) == 0x0010_1B36)
    }
}

@Suite("VMM passthrough: MSI and INTx as the guest sees them")
struct PassthroughMSITests {
    @Test("MSI is virtual: vectors capped at what the device raises, address dword-aligned, 16-bit data, mask and pending bits; nothing reaches the device")
    func msi32WithMasking() {
        let dev = RecordedConfig.msiOnly()
        let c = PassthroughConfigSpace(backend: dev, bars: [PCIBARDescription(index: 4, kind: .io, prefetchable: false, size: 32)])
        #expect(c.msi?.capability == 0x80 && c.msi?.is64Bit == false && c.msi?.perVectorMasking == true && c.msi?.capableLog2 == 3)
        #expect(c.msi?.dataOffset == 0x88 && c.msi?.maskOffset == 0x8C && c.msi?.end == 0x94)
        #expect(c.msix == nil)
        #expect(c.read(offset: 0x80, size: 4) == 0x0106_0005)     // next 0: SATA is hidden; MMC 3, PVM
        #expect(c.read(offset: 0x8C, size: 4) == 0)                // the guest's mask bits, not the device's
        var told = 0
        c.onMSIChange = { told += 1 }
        c.write(offset: 0x84, size: 4, value: 0xFEE0_1003)
        #expect(c.read(offset: 0x84, size: 4) == 0xFEE0_1000 && c.msiState.address == 0xFEE0_1000)
        c.write(offset: 0x88, size: 4, value: 0xABCD_4041)         // extended message data: not implemented
        #expect(c.read(offset: 0x88, size: 4) == 0x0000_4041)
        c.write(offset: 0x82, size: 2, value: 0x0071)              // enable, asking for 128 vectors
        #expect(c.msiState.enabled && c.msiState.enabledLog2 == 3 && c.msiState.vectors == 8)
        #expect(c.read(offset: 0x82, size: 2) == 0x0137)
        #expect(c.msiState.data(ofVector: 5) == 0x4045 && c.msiState.data(ofVector: 0) == 0x4040)
        c.write(offset: 0x8C, size: 4, value: 0xFFFF_FFFF)        // only the 8 implemented mask bits stick
        #expect(c.read(offset: 0x8C, size: 4) == 0xFF && c.msiState.isMasked(7))
        c.msiPendingProbe = { $0 == 2 || $0 == 9 }
        #expect(c.read(offset: 0x90, size: 4) == 0x04)             // masked vector 2 waits; 9 does not exist
        c.write(offset: 0x8C, size: 1, value: 0xFB)                // unmask 2
        #expect(c.read(offset: 0x90, size: 4) == 0)
        c.write(offset: 0x90, size: 4, value: 0xFFFF_FFFF)        // pending bits are read-only
        c.write(offset: 0x83, size: 1, value: 0xFF)                // control's high byte: read-only
        #expect(c.read(offset: 0x82, size: 2) == 0x0137)
        #expect(told == 7)
        c.write(offset: 0x82, size: 2, value: 0x0000)
        #expect(!c.msiState.enabled && c.msiState.enabledLog2 == 0)
        #expect(dev.writes.isEmpty, "MSI registers are the VMM's; the host kernel programs the device's")
    }

    @Test("64-bit MSI without per-vector masking: the high address dword, data at +0x0C, no mask bits")
    func msi64() {
        let dev = RecordedConfig.nvmeVF()
        let c = PassthroughConfigSpace(backend: dev, bars: RecordedConfig.bars)
        #expect(c.msi?.is64Bit == true && c.msi?.perVectorMasking == false && c.msi?.capableLog2 == 2 && c.msi?.end == 0x60)
        c.write(offset: 0x54, size: 4, value: 0xFEE0_0000)
        c.write(offset: 0x58, size: 4, value: 0x0000_0001)
        c.write(offset: 0x5C, size: 2, value: 0x0031)
        c.write(offset: 0x52, size: 1, value: 0x21)                // enable, 4 vectors
        #expect(c.msiState == MSIState(enabled: true, enabledLog2: 2, address: 0x1_FEE0_0000, data: 0x31, mask: 0))
        #expect(c.read(offset: 0x50, size: 4) == 0x00A5_7005)     // next: MSI-X at 0x70
        #expect(c.read(offset: 0x58, size: 4) == 1 && c.read(offset: 0x5C, size: 4) == 0x31)
        #expect(dev.writes.isEmpty)
    }

    @Test("an MSI capability that would run past 256 bytes is hidden, not kept")
    func msiTooLong() {
        let dev = RecordedConfig.msiOnly()
        dev.put(0x34, [0xF0]); dev.put(0xF0, [0x05, 0x00]); dev.put16(0xF2, 0x0180)   // 64-bit + masking: 0x18 bytes
        let c = PassthroughConfigSpace(backend: dev, bars: [])
        #expect(c.msi == nil && c.read(offset: 0x34, size: 1) == 0 && c.read(offset: 0xF0, size: 4) == 0)
    }

    @Test("interrupt pin: INTA when the VMM routes INTx, with the line register starting at its GSI; 0 without")
    func interruptPin() {
        let dev = RecordedConfig.msiOnly()
        let c = PassthroughConfigSpace(backend: dev, bars: [], intxLine: 17)
        #expect(c.hasINTx && c.read(offset: 0x3C, size: 2) == 0x0111)
        c.write(offset: 0x3C, size: 1, value: 0x0B)                // the guest's to change (firmware's register)
        #expect(c.read(offset: 0x3C, size: 1) == 0x0B && dev.writes.isEmpty)
        #expect(PassthroughConfigSpace(backend: dev, bars: []).read(offset: 0x3D, size: 1) == 0)   // VFIO cannot signal it
        dev.put(0x3D, [0x00])                                       // a function without a pin
        let none = PassthroughConfigSpace(backend: dev, bars: [], intxLine: 17)
        #expect(!none.hasINTx && none.read(offset: 0x3C, size: 2) == 0)
    }
}

@Suite("VMM passthrough: MSI-X table emulation")
struct MSIXTableTests {
    @Test("entries start masked; 4- and 8-byte writes set address, data and mask; changes are reported per vector")
    func entries() {
        let t = MSIXTable(count: 4)
        var changed: [Int] = []
        t.onVectorChange = { changed.append($0) }
        #expect((0..<4).allSatisfy { t.isMasked($0) })
        t.writeTable(offset: 0x10, size: 8, value: 0x0000_0000_FEE0_100E)   // vector 1 address (low bits dropped)
        t.writeTable(offset: 0x18, size: 4, value: 0x4041)                   // data
        t.writeTable(offset: 0x1C, size: 4, value: 0xFFFF_FFFE)              // unmask (reserved bits dropped)
        #expect(t.entries[1] == MSIXTable.Entry(addressLow: 0xFEE0_100C, addressHigh: 0, data: 0x4041, control: 0))
        #expect(changed == [1, 1, 1])
        #expect(t.readTable(offset: 0x18, size: 8) == 0x0000_0000_0000_4041)
        #expect(t.isMasked(1), "MSI-X itself is still off")
        t.setControl(enabled: true, functionMasked: false)
        #expect(!t.isMasked(1) && t.isMasked(0))
        t.setControl(enabled: true, functionMasked: true)
        #expect(t.isMasked(1))
        t.writeTable(offset: 0x1C, size: 4, value: 0)                        // no change: not reported
        #expect(changed == [1, 1, 1])
    }

    @Test("writes past the table, misaligned or of odd size are ignored; reads of them return 0")
    func hostile() {
        let t = MSIXTable(count: 2)
        var changed = 0
        t.onVectorChange = { _ in changed += 1 }
        t.writeTable(offset: 0x20, size: 4, value: 1)          // entry 2 of 2
        t.writeTable(offset: 0x1C, size: 8, value: 1)          // 8 bytes straddling the end
        t.writeTable(offset: 0x02, size: 4, value: 1)          // misaligned
        t.writeTable(offset: 0x00, size: 2, value: 1)          // 2-byte
        t.writeTable(offset: UInt64.max - 3, size: 4, value: 1)
        #expect(changed == 0 && t.refusedAccesses == 5)
        #expect(t.readTable(offset: 0x40, size: 4) == 0 && t.readTable(offset: 1, size: 1) == 0)
        #expect(t.entries.allSatisfy { $0 == MSIXTable.Entry() })
    }

    @Test("the PBA shows recorded pending bits and masked vectors whose event waits")
    func pba() {
        let t = MSIXTable(count: 70)
        t.setControl(enabled: true, functionMasked: false)
        for v in 0..<70 { t.writeTable(offset: UInt64(v) * 16 + 12, size: 4, value: 0) }   // all unmasked
        t.writeTable(offset: 3 * 16 + 12, size: 4, value: 1)                              // mask vector 3
        t.pendingProbe = { $0 == 3 || $0 == 5 }                                            // 5 is unmasked: not pending
        t.setPending(66, true)
        #expect(t.readPBA(offset: 0, size: 8) == 1 << 3)
        #expect(t.readPBA(offset: 8, size: 4) == 1 << 2)
        #expect(t.readPBA(offset: 16, size: 8) == 0 && t.refusedAccesses == 1)
    }
}

@Suite("VMM passthrough: host bridge and buses")
struct PCIBusTests {
    final class Function: PCIFunction {
        var log: [String] = []
        func configRead(offset: Int, size: Int) -> UInt32 { log.append("r\(offset)/\(size)"); return 0x1234_5678 }
        func configWrite(offset: Int, size: Int, value: UInt32) { log.append("w\(offset)/\(size)=\(String(value, radix: 16))") }
    }

    func out(_ b: PCIHostBridge, _ port: UInt16, _ value: UInt32, size: Int) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
        bytes.withUnsafeBytes { b.write(offset: port - 0xCF8, data: $0) }
    }

    func inp(_ b: PCIHostBridge, _ port: UInt16, size: Int) -> UInt32 {
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { b.read(offset: port - 0xCF8, data: $0) }
        return bytes.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }

    @Test("configuration mechanism #1 reaches the function in its slot, with the byte offset and size of the access")
    func routing() {
        let bridge = PCIHostBridge(), f = Function()
        bridge.attach(f, slot: 1)
        #expect(bridge.freeSlot == 2)
        out(bridge, 0xCF8, 0x8000_0800 | 0x10, size: 4)          // 00:01.0 register 0x10
        #expect(inp(bridge, 0xCFC, size: 4) == 0x1234_5678)
        out(bridge, 0xCFE, 0xBEEF, size: 2)
        #expect(f.log == ["r16/4", "w18/2=beef"])
        out(bridge, 0xCF8, 0x8000_1000, size: 4)                 // 00:02.0: empty
        #expect(inp(bridge, 0xCFC, size: 4) == 0xFFFF_FFFF)
        out(bridge, 0xCF8, 0x8000_0900, size: 4)                 // 00:01.1: only function 0 exists
        #expect(inp(bridge, 0xCFC, size: 2) == 0xFFFF)
        out(bridge, 0xCF8, 0x8001_0800, size: 4)                 // bus 1: nothing
        #expect(inp(bridge, 0xCFC, size: 4) == 0xFFFF_FFFF)
        out(bridge, 0xCF8, 0x8000_0000, size: 4)                 // the host bridge itself
        #expect(inp(bridge, 0xCFC, size: 4) == 0x0D57_8086)
        out(bridge, 0xCF8, 0x8000_0800, size: 4)
        #expect(inp(bridge, 0xCFD, size: 2) == 0xFFFF, "a 2-byte access at an odd data port is refused")
        #expect(f.log.count == 2)
    }

    final class Window: MMIODevice {
        var hits: [(Int, UInt64)] = []
        func mmioRead(region: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
            hits.append((region, offset)); data.initializeMemory(as: UInt8.self, repeating: 0xAB)
        }
        func mmioWrite(region: Int, offset: UInt64, data: UnsafeRawBufferPointer) { hits.append((region, offset)) }
    }

    @Test("MMIO ranges move, refuse overlaps, and unclaimed addresses read all ones")
    func mmio() {
        let bus = MMIOBus(lock: Lock()), a = Window(), b = Window()
        #expect(bus.placeHoldingLock(a, region: 0, base: 0xC000_0000, size: 0x4000))
        #expect(!bus.placeHoldingLock(b, region: 0, base: 0xC000_2000, size: 0x1000))
        #expect(bus.placeHoldingLock(b, region: 2, base: 0xC000_4000, size: 0x1000))
        var word = [UInt8](repeating: 0, count: 4)
        word.withUnsafeMutableBytes { bus.read(address: 0xC000_3FFC, data: $0) }
        #expect(word == [0xAB, 0xAB, 0xAB, 0xAB] && a.hits.count == 1 && a.hits[0].1 == 0x3FFC)
        #expect(bus.placeHoldingLock(a, region: 0, base: 0xD000_0000, size: 0x4000))   // the guest moved it
        word.withUnsafeMutableBytes { bus.read(address: 0xC000_0000, data: $0) }
        #expect(word == [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(bus.placeHoldingLock(a, region: 0, base: nil, size: 0x4000))           // decoding off
        #expect(bus.ranges(of: a).isEmpty && bus.ranges(of: b).count == 1)
        #expect(!bus.placeHoldingLock(a, region: 1, base: UInt64.max - 0xFFF, size: 0x2000), "wrapping range")
    }
}
