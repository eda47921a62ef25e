/// Minimal ACPI for a hardware-reduced machine (ACPI 6.x), so a guest can power off cleanly:
///
/// ```
/// 0xE_0000  RSDP (revision 2: XSDT only)        found by Linux's scan of 0xE0000…0xFFFFF, and
///           XSDT → FADT, MADT                   through boot_params.acpi_rsdp_addr
///           FADT  HW_REDUCED_ACPI; SLEEP_CONTROL_REG / SLEEP_STATUS_REG and RESET_REG: I/O port 0x600
///           DSDT  Name (_S5_, Package (2) { 5, 0 }) and COM1 (PNP0501, 0x3F8, IRQ 4) — handwritten AML
///           MADT  one local APIC per vCPU, the IOAPIC (ISA IRQ n → pin n), LINT1 NMI
/// ```
/// Linux powers off by writing SLP_TYP (5, from `_S5_`) << 2 | SLP_EN (0x20) = 0x34 to the sleep
/// control register; `ACPIPowerDevice` turns that into the end of the VM. The MP table stays for
/// guests booted with `acpi=off`.
public enum ACPITables {
    /// Where the tables go: the BIOS area, reserved in the e820 map.
    public static let base: UInt64 = 0xE_0000
    public static let areaSize: UInt64 = 0x2_0000
    /// The sleep control/status and reset register (one byte, I/O space).
    public static let powerPort: UInt16 = 0x600
    /// SLP_TYP for S5 in `_S5_`, and the sleep control bits Linux writes.
    public static let s5SleepType: UInt8 = 5
    public static let sleepEnable: UInt8 = 0x20
    public static let resetValue: UInt8 = 1

    static let oemID = Array("PASSGE".utf8)
    static let oemTableID = Array("PASSAGE ".utf8)

    /// The tables as they lie from `base`, and the addresses of each, for `cpus` vCPUs.
    /// With `pciRoot`, the DSDT also describes the PCI host bridge (`PCI0`), so the guest scans bus 0.
    public static func build(cpus: Int, pciRoot: Bool = false, at base: UInt64 = ACPITables.base) -> (bytes: [UInt8], rsdp: UInt64, tables: [String: UInt64]) {
        var out = [UInt8](repeating: 0, count: 36)       // RSDP first (filled in last), then 16-byte aligned tables
        var at: [String: UInt64] = [:]
        func place(_ name: String, _ table: [UInt8]) -> UInt64 {
            while out.count % 16 != 0 { out.append(0) }
            let address = base + UInt64(out.count)
            at[name] = address
            out += table
            return address
        }
        let dsdt = place("DSDT", table("DSDT", revision: 2, body: dsdtAML(pciRoot: pciRoot)))
        let fadt = place("FACP", table("FACP", revision: 6, body: fadtBody(dsdt: dsdt)))
        let madt = place("APIC", table("APIC", revision: 5, body: madtBody(cpus: cpus)))
        let xsdt = place("XSDT", table("XSDT", revision: 1, body: le64(fadt) + le64(madt)))
        var rsdp = Array("RSD PTR ".utf8) + [0] + oemID + [2] + le32(0) + le32(36) + le64(xsdt) + [0, 0, 0, 0]
        rsdp[8] = checksum(rsdp[0..<20])
        rsdp[32] = checksum(rsdp)
        out.replaceSubrange(0..<36, with: rsdp)
        return (out, base, at)
    }

    /// The value that makes `bytes` sum to zero (mod 256) when stored in its checksum field (now 0).
    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt8 { 0 &- bytes.reduce(0, &+) }

    /// A system description table: the 36-byte header, then `body`, checksummed.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var t = Array(signature.utf8) + le32(UInt32(36 + body.count)) + [revision, 0] + oemID + oemTableID
            + le32(1) + Array("PSSG".utf8) + le32(1) + body
        t[9] = checksum(t)
        return t
    }

    /// The DSDT's AML, by hand:
    /// ```
    /// Name (_S5_, Package (2) { 5, Zero })
    /// Scope (\_SB_) {
    ///     Device (COM1) {
    ///         Name (_HID, EisaId ("PNP0501"))
    ///         Name (_UID, One)
    ///         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 0, 8)  IRQNoFlags () {4} })
    ///     }
    /// }
    /// ```
    /// COM1 has to be there: a hardware-reduced machine has no legacy PIC for Linux
    /// (`acpi_generic_reduced_hw_init`), so ISA IRQ 4 reaches the UART driver only through the
    /// IOAPIC pin ACPI registers from this `_CRS`.
    ///
    /// With `pciRoot`, the scope also holds the PCI host bridge:
    /// ```
    /// Device (PCI0) {
    ///     Name (_HID, EisaId ("PNP0A03"))  Name (_UID, Zero)  Name (_BBN, Zero)
    ///     Name (_CRS, ResourceTemplate () {
    ///         WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0, 0, 1)
    ///         IO (Decode16, 0xCF8, 0xCF8, 1, 8)
    ///         WordIO (…, 0x0000, 0x0CF7, …)  WordIO (…, 0x0D00, 0xFFFF, …)
    ///         DWordMemory (…, 0xC0000000, 0xFEBFFFFF, …)   // the PCI hole up to the IOAPIC
    ///     })
    ///     Name (_PRT, Package (31) {                        // INTA of slots 1…31 → IOAPIC pins
    ///         Package (4) { 0x0001FFFF, 0, 0, 17 }, …       // PCIHostBridge.intxGSI(slot:)
    ///     })
    /// }
    /// ```
    /// Linux then enumerates bus 0 through configuration mechanism #1 and keeps the BARs the VMM
    /// placed inside that window. (No MCFG: only the first 256 bytes of configuration space are
    /// reachable, which hides every extended capability as well.)
    static func dsdtAML(pciRoot: Bool = false) -> [UInt8] {
        let s5 = [0x08] + Array("_S5_".utf8) + [0x12, 0x05, 0x02, 0x0A, s5SleepType, 0x00]
        let hid: [UInt8] = [0x08] + Array("_HID".utf8) + [0x0C, 0x41, 0xD0, 0x05, 0x01]  // DWordConst EISA "PNP0501"
        let uid: [UInt8] = [0x08] + Array("_UID".utf8) + [0x01]                          // OneOp
        let resources: [UInt8] = [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08,     // I/O: decode16, 0x3F8, align 0, 8 ports
                                  0x22, 0x10, 0x00,                                    // IRQ mask: 1 << 4
                                  0x79, 0x00]                                          // end tag
        let buffer = [0x11] + pkgLength(2 + resources.count) + [0x0A, UInt8(resources.count)] + resources
        let crs = [0x08] + Array("_CRS".utf8) + buffer
        let deviceBody = Array("COM1".utf8) + hid + uid + crs
        let device = [0x5B, 0x82] + pkgLength(deviceBody.count) + deviceBody             // DeviceOp
        let scopeBody = [0x5C] + Array("_SB_".utf8) + device + (pciRoot ? pciRootAML() : [])
        let scope = [0x10] + pkgLength(scopeBody.count) + scopeBody                      // ScopeOp
        return s5 + scope
    }

    /// The `PCI0` device of `dsdtAML(pciRoot: true)`.
    static func pciRootAML() -> [UInt8] {
        func word(_ type: UInt8, typeFlags: UInt8, min: UInt16, max: UInt16) -> [UInt8] {
            // Word address space descriptor: producer, min/max fixed, positive decode.
            [0x88, 0x0D, 0x00, type, 0x0C, typeFlags] + le16(0) + le16(min) + le16(max) + le16(0) + le16(max &- min &+ 1)
        }
        let low = UInt32(truncatingIfNeeded: GuestMemory.pciHoleStart), high: UInt32 = UInt32(BootLayout.ioapic) - 1
        let memory: [UInt8] = [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01] + le32(0) + le32(low) + le32(high) + le32(0) + le32(high - low + 1)
        let resources = word(2, typeFlags: 0, min: 0, max: 0)                           // bus 0
            + [0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08]                         // IO 0xCF8, 8 ports
            + word(1, typeFlags: 3, min: 0x0000, max: 0x0CF7)                           // I/O window below 0xCF8
            + word(1, typeFlags: 3, min: 0x0D00, max: 0xFFFF)                           // and above
            + memory                                                                     // 32-bit memory window
            + [0x79, 0x00]
        let buffer = [0x11] + pkgLength(3 + resources.count) + [0x0B] + le16(UInt16(resources.count)) + resources  // WordConst size
        let hid: [UInt8] = [0x08] + Array("_HID".utf8) + [0x0C, 0x41, 0xD0, 0x0A, 0x03]  // EISA "PNP0A03"
        let uid: [UInt8] = [0x08] + Array("_UID".utf8) + [0x00]                          // ZeroOp
        let bbn: [UInt8] = [0x08] + Array("_BBN".utf8) + [0x00]
        let crs = [0x08] + Array("_CRS".utf8) + buffer
        let body = Array("PCI0".utf8) + hid + uid + bbn + crs + prtAML()
        return [0x5B, 0x82] + pkgLength(body.count) + body
    }

    /// `_PRT` of `PCI0`: for each slot 1…31 its INTA (pin 0; the VMM shows every passed-through
    /// function as single-function with pin INTA) wired straight to a GSI (source 0), the one
    /// `PCIHostBridge.intxGSI(slot:)` names. Linux then registers the pin level-triggered, active low.
    static func prtAML() -> [UInt8] {
        var entries: [UInt8] = []
        for slot in 1..<32 {
            let fields: [UInt8] = [0x04]                                                  // NumElements
                + [0x0C] + le32(UInt32(slot) << 16 | 0xFFFF)                             // DWordConst address: slot, any function
                + [0x00, 0x00]                                                           // pin INTA (Zero), source Zero
                + [0x0A, UInt8(PCIHostBridge.intxGSI(slot: slot))]                       // ByteConst GSI
            entries += [0x12] + pkgLength(fields.count) + fields                         // PackageOp
        }
        let package = [0x12] + pkgLength(1 + entries.count) + [31] + entries
        return [0x08] + Array("_PRT".utf8) + package
    }

    /// AML PkgLength for `count` bytes following it: the encoding counts its own bytes.
    static func pkgLength(_ count: Int) -> [UInt8] {
        if count + 1 < 0x40 { return [UInt8(count + 1)] }
        let n = count + 2                                                // two-byte form: up to 4095
        precondition(n < 0x1000, "AML package too long for this encoder")
        return [0x40 | UInt8(n & 0xF), UInt8(n >> 4)]
    }

    /// Generic Address Structure: system I/O, `bits` wide at `port`.
    static func ioGAS(_ port: UInt16, bits: UInt8) -> [UInt8] {
        [1, bits, 0, 1] + le64(UInt64(port))  // space 1 = I/O, bit offset 0, access size 1 = byte
    }

    /// FADT (ACPI 6.5 layout, 276 bytes with the header).
    static func fadtBody(dsdt: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 276 - 36)
        func put(_ offset: Int, _ bytes: [UInt8]) { b.replaceSubrange((offset - 36)..<(offset - 36 + bytes.count), with: bytes) }
        put(40, le32(UInt32(truncatingIfNeeded: dsdt)))              // DSDT (32-bit)
        put(46, le16(9))                                             // SCI_INT (unused: hardware-reduced)
        put(109, le16(1 << 1 | 1 << 2))                              // IAPC_BOOT_ARCH: 8042 present, no VGA
        put(112, le32(1 << 20 | 1 << 10))                            // flags: HW_REDUCED_ACPI, RESET_REG_SUP
        put(116, ioGAS(powerPort, bits: 8))                          // RESET_REG
        put(128, [resetValue])                                       // RESET_VALUE
        put(131, [5])                                                // FADT minor version (6.5)
        put(140, le64(dsdt))                                         // X_DSDT
        put(244, ioGAS(powerPort, bits: 8))                          // SLEEP_CONTROL_REG
        put(256, ioGAS(powerPort, bits: 8))                          // SLEEP_STATUS_REG
        put(268, Array("PASSAGE ".utf8))                             // hypervisor vendor identity
        return b
    }

    /// MADT: LAPIC address, PCAT_COMPAT (the in-kernel 8259s are there), a local APIC per vCPU,
    /// the IOAPIC with GSI base 0 (no overrides: ISA IRQ n is pin n, as in the MP table and KVM's
    /// default routing), LINT1 of every processor as NMI.
    static func madtBody(cpus: Int) -> [UInt8] {
        var b = le32(UInt32(BootLayout.lapic)) + le32(1)
        for cpu in 0..<cpus { b += [0, 8, UInt8(cpu), UInt8(cpu)] + le32(1) } // processor UID, APIC id, enabled
        b += [1, 12, UInt8(cpus), 0] + le32(UInt32(BootLayout.ioapic)) + le32(0)
        b += [4, 6, 0xFF, 0, 0, 1]                                   // local APIC NMI: all processors, LINT1
        return b
    }

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

/// The sleep control/status and reset register of the hardware-reduced FADT, on I/O port 0x600:
/// SLP_EN with SLP_TYP 5 (S5) powers the machine off, the FADT's reset value resets it; the
/// status register reads 0 and its writes (WAK_STS clears) are ignored.
public final class ACPIPowerDevice: PortIODevice {
    private let powerOff: () -> Void
    private let reset: () -> Void

    public init(powerOff: @escaping () -> Void, reset: @escaping () -> Void) {
        self.powerOff = powerOff
        self.reset = reset
    }

    public func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {
        data.initializeMemory(as: UInt8.self, repeating: 0)
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        guard offset == 0, let v = data.first else { return }
        if v & ACPITables.sleepEnable != 0 {
            if (v >> 2) & 7 == ACPITables.s5SleepType { powerOff() }
        } else if v == ACPITables.resetValue {
            reset()
        }
    }
}
