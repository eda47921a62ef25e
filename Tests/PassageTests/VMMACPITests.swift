import Foundation
import Testing
@testable import VMM

@Suite("ACPI: hardware-reduced tables and the power-off register", .serialized)
struct VMMACPITests {
    func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
    func u64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32 }

    /// The table at guest address `address` inside `t` (built at ACPITables.base), by its header's length.
    func table(_ t: (bytes: [UInt8], rsdp: UInt64, tables: [String: UInt64]), at address: UInt64) -> [UInt8] {
        let o = Int(address - ACPITables.base)
        return Array(t.bytes[o..<(o + Int(u32(t.bytes, o + 4)))])
    }

    @Test("RSDP → XSDT → FADT → DSDT, MADT: signatures, lengths, checksums")
    func tables() {
        for cpus in [1, 2, 32] {
            let t = ACPITables.build(cpus: cpus)
            #expect(t.rsdp == 0xE_0000 && t.bytes.count <= Int(ACPITables.areaSize))
            let rsdp = Array(t.bytes[0..<36])
            #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8))
            #expect(rsdp[0..<20].reduce(0, &+) == 0)                  // ACPI 1.0 checksum
            #expect(rsdp.reduce(0, &+) == 0)                          // extended checksum
            #expect(rsdp[15] == 2 && u32(rsdp, 16) == 0 && u32(rsdp, 20) == 36)
            let xsdt = table(t, at: u64(rsdp, 24))
            #expect(Array(xsdt[0..<4]) == Array("XSDT".utf8) && xsdt.reduce(0, &+) == 0 && xsdt.count == 36 + 16)
            let fadt = table(t, at: u64(xsdt, 36))
            let madt = table(t, at: u64(xsdt, 44))
            #expect(Array(fadt[0..<4]) == Array("FACP".utf8) && fadt.count == 276 && fadt.reduce(0, &+) == 0)
            #expect(fadt[8] == 6 && fadt[131] == 5)                   // revision 6.5
            #expect(u32(fadt, 112) & (1 << 20) != 0)                  // HW_REDUCED_ACPI
            // SLEEP_CONTROL_REG, SLEEP_STATUS_REG, RESET_REG: byte-wide I/O at 0x600.
            for o in [244, 256, 116] { #expect(Array(fadt[o..<(o + 4)]) == [1, 8, 0, 1] && u64(fadt, o + 4) == 0x600) }
            #expect(fadt[128] == ACPITables.resetValue)
            let dsdt = table(t, at: u64(fadt, 140))
            #expect(UInt64(u32(fadt, 40)) == u64(fadt, 140))
            #expect(Array(dsdt[0..<4]) == Array("DSDT".utf8) && dsdt.reduce(0, &+) == 0)
            // Name (_S5_, Package (2) { 5, Zero }): PkgLength counts itself, NumElements and the elements.
            #expect(Array(dsdt[36..<47]) == [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x05, 0x02, 0x0A, 0x05, 0x00])
            // Scope (\_SB_) { Device (COM1) { _HID PNP0501, _UID 1, _CRS IO 0x3F8/8 + IRQ 4 } }, as iasl encodes it.
            let expected: [UInt8] = [
                0x10, 0x33, 0x5C, 0x5F, 0x53, 0x42, 0x5F,
                0x5B, 0x82, 0x2B, 0x43, 0x4F, 0x4D, 0x31,
                0x08, 0x5F, 0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x05, 0x01,
                0x08, 0x5F, 0x55, 0x49, 0x44, 0x01,
                0x08, 0x5F, 0x43, 0x52, 0x53, 0x11, 0x10, 0x0A, 0x0D,
                0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00,
            ]
            #expect(Array(dsdt[47...]) == expected)
            #expect(Array(madt[0..<4]) == Array("APIC".utf8) && madt.reduce(0, &+) == 0)
            #expect(u32(madt, 36) == 0xFEE0_0000 && u32(madt, 40) == 1)
            // Entries: a local APIC per vCPU (enabled), one IOAPIC with id = cpus at 0xFEC00000, GSI 0; a LINT1 NMI.
            var o = 44, lapics: [UInt8] = [], ioapics = 0, nmis = 0
            while o < madt.count {
                let (type, length) = (madt[o], Int(madt[o + 1]))
                #expect(length > 0)
                switch type {
                case 0: lapics.append(madt[o + 3]); #expect(u32(madt, o + 4) == 1)
                case 1: ioapics += 1; #expect(madt[o + 2] == UInt8(cpus) && u32(madt, o + 4) == 0xFEC0_0000 && u32(madt, o + 8) == 0)
                case 4: nmis += 1; #expect(madt[o + 5] == 1)
                default: Issue.record("unexpected MADT entry type \(type)")
                }
                o += max(length, 1)
            }
            #expect(o == madt.count && lapics == (0..<cpus).map(UInt8.init) && ioapics == 1 && nmis == 1)
        }
    }

    @Test("AML PkgLength: one byte below 63, two bytes (low nibble + next byte) up to 4095, counting itself")
    func pkgLength() {
        #expect(ACPITables.pkgLength(4) == [5])
        #expect(ACPITables.pkgLength(62) == [63])
        #expect(ACPITables.pkgLength(63) == [0x41, 0x04])     // 65 = 0x41
        #expect(ACPITables.pkgLength(200) == [0x4A, 0x0C])    // 202 = 0xCA
    }

    @Test("the power register: SLP_EN with S5 powers off, the reset value resets, the rest is ignored")
    func powerDevice() {
        var off = 0, resets = 0
        let d = ACPIPowerDevice(powerOff: { off += 1 }, reset: { resets += 1 })
        func w(_ v: UInt8) { withUnsafeBytes(of: v) { d.write(offset: 0, data: $0) } }
        w(0x80)                          // WAK_STS clear (Linux writes it first)
        w(0x14)                          // SLP_TYP 5 without SLP_EN
        w(0x20 | 3 << 2)                 // S3: not supported, ignored
        #expect(off == 0 && resets == 0)
        w(0x34)                          // SLP_TYP 5 | SLP_EN
        #expect(off == 1)
        w(1)
        #expect(resets == 1)
        var r: UInt8 = 0xAA
        withUnsafeMutableBytes(of: &r) { d.read(offset: 0, data: $0) }
        #expect(r == 0)
    }

    @Test("a whole machine: the guest writes 0x34 to port 0x600 and the VM ends as powered off, status 0")
    func machinePowersOff() throws {
        let code: [UInt8] = [
            0x66, 0xBA, 0x00, 0x06,       // mov dx, 0x600
            0xB0, 0x80, 0xEE,             // mov al, 0x80; out dx, al   (WAK_STS)
            0xB0, 0x34, 0xEE,             // mov al, 0x34; out dx, al   (SLP_TYP 5 | SLP_EN)
            0xF4, 0xEB, 0xFD,             // hlt; jmp hlt
        ]
        let kernel = try tempFile("acpi-off", syntheticBzImage(entryCode: code))
        defer { unlink(kernel) }
        let machine = try Machine(config: VMConfig(kernel: kernel, commandLine: "x", memory: 32 << 20, console: .none))
        let exit = try machine.run()
        #expect(exit == .poweroff)
        #expect(exit.exitStatus == 0 && exit.description == "the guest powered off")
    }

    @Test("with passthrough devices the DSDT adds PCI0 (PNP0A03) with bus 0, the 0xCF8 ports, I/O and PCI-hole windows")
    func pciRoot() {
        let plain = ACPITables.build(cpus: 1), pci = ACPITables.build(cpus: 1, pciRoot: true)
        let d0 = table(plain, at: plain.tables["DSDT"]!), d1 = table(pci, at: pci.tables["DSDT"]!)
        #expect(d1.reduce(0, &+) == 0 && d1.count > d0.count)
        let aml = ACPITables.pciRootAML()
        #expect(Array(d1[(d1.count - aml.count)...]) == aml, "PCI0 closes the \\_SB_ scope")
        #expect(Array(aml[0..<2]) == [0x5B, 0x82] && Array(aml[4..<8]) == Array("PCI0".utf8))
        // DeviceOp PkgLength (2-byte form) covers the rest of the device exactly.
        #expect(Int(aml[2] & 0x0F) | Int(aml[3]) << 4 == aml.count - 2)
        let crs = aml.firstRange(of: Array("_CRS".utf8))!.upperBound
        #expect(aml[crs] == 0x11 && aml[crs + 3] == 0x0B)                                 // Buffer, WordConst size
        let n = Int(aml[crs + 4]) | Int(aml[crs + 5]) << 8
        let r = Array(aml[(crs + 6)..<(crs + 6 + n)])
        #expect(Array(r.suffix(2)) == [0x79, 0x00])
        #expect(Array(aml[(crs + 6 + n)..<(crs + 6 + n + 5)]) == [0x08] + Array("_PRT".utf8), "then _PRT")
        #expect(Array(r[0..<4]) == [0x88, 0x0D, 0x00, 0x02])                              // bus numbers
        #expect(Array(r[16..<24]) == [0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08])
        let mem = Array(r[56..<82])
        #expect(mem[0] == 0x87 && u32(mem, 10) == 0xC000_0000 && u32(mem, 14) == 0xFEBF_FFFF && u32(mem, 22) == 0x3EC0_0000)
    }

    @Test("PCI0's _PRT wires INTA of slots 1…31 to the GSIs the VMM raises (16…23 in turn)")
    func interruptRouting() {
        let aml = ACPITables.pciRootAML()
        let at = aml.firstRange(of: Array("_PRT".utf8))!
        #expect(aml[at.lowerBound - 1] == 0x08)                                          // NameOp
        let prt = Array(aml[at.upperBound...])
        #expect(prt[0] == 0x12)                                                          // PackageOp
        let length = Int(prt[1] & 0x0F) | Int(prt[2]) << 4                              // 2-byte PkgLength
        #expect(prt.count == 1 + length && prt[3] == 31, "_PRT ends PCI0; 31 entries")
        var entries: [(slot: Int, pin: UInt8, source: UInt8, gsi: UInt8)] = []
        var i = 4
        while i < prt.count {
            let e = Array(prt[i..<(i + 12)])
            #expect(e[0] == 0x12 && e[1] == 11 && e[2] == 4 && e[3] == 0x0C && e[10] == 0x0A)
            entries.append((Int(u32(e, 4) >> 16), e[8], e[9], e[11]))
            #expect(u32(e, 4) & 0xFFFF == 0xFFFF, "any function of the slot")
            i += 12
        }
        #expect(entries.map(\.slot) == Array(1...31))
        #expect(entries.allSatisfy { $0.pin == 0 && $0.source == 0 && UInt32($0.gsi) == PCIHostBridge.intxGSI(slot: $0.slot) })
        #expect(Set(entries.prefix(8).map(\.gsi)) == Set(16...23), "the first eight slots each have a line of their own")
    }
}
