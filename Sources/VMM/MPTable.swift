/// An Intel MultiProcessor Specification 1.4 table: how Linux, without ACPI, learns the CPUs
/// (and starts the APs), the IOAPIC, and how ISA interrupts, the PCI slots' INTA lines and
/// LINT0/LINT1 are wired.
///
/// Layout: the 16-byte floating pointer, then the configuration table with processor, bus,
/// IOAPIC, I/O interrupt and local interrupt entries. With PCI slots the PCI bus is bus 0 (Linux
/// takes an MP bus id for the PCI bus number) and ISA bus 1; else ISA is bus 0.
public enum MPTable {
    /// Most vCPUs that fit in the last KiB of base memory with the other entries.
    public static let maximumCPUs = 32
    static let apicVersion: UInt8 = 0x14
    static let ioapicVersion: UInt8 = 0x11
    /// ISA interrupts routed to the IOAPIC (identity: IRQ n → pin n, as KVM's default GSI routing does).
    static let isaIRQs = 16

    /// The most bytes the table may take: the last KiB of base memory, where it is placed.
    public static let maximumSize = 0x400

    /// The table for `cpus` vCPUs with APIC ids 0 ..< cpus, placed at guest-physical `address`;
    /// with `pciSlots` > 0, INTA of PCI bus 0's slots 1…`pciSlots` routed to the IOAPIC pins the
    /// DSDT's `_PRT` names (`PCIHostBridge.intxGSI(slot:)`), level-triggered and active low, as
    /// many of them as fit in `maximumSize` (all 31 with up to 27 vCPUs, 19 with 32; slots are used
    /// from 1 up).
    public static func build(cpus: Int, pciSlots: Int = 0, at address: UInt64) -> [UInt8] {
        precondition(cpus >= 1 && cpus <= maximumCPUs && (0...31).contains(pciSlots))
        let ioapicID = UInt8(cpus)
        var entries: [UInt8] = []
        var count: UInt16 = 0
        for cpu in 0..<cpus {
            var e: [UInt8] = [0, UInt8(cpu), apicVersion, cpu == 0 ? 0x3 : 0x1] // type, APIC id, version, enabled (| BSP)
            e += le32(0x600)            // CPU signature: family 6
            e += le32(0x201)            // feature flags: FPU, APIC
            e += [UInt8](repeating: 0, count: 8)
            entries += e
            count += 1
        }
        let isaBus: UInt8 = pciSlots > 0 ? 1 : 0
        if pciSlots > 0 {
            entries += [1, 0] + Array("PCI   ".utf8)                    // bus 0: PCI
            count += 1
        }
        entries += [1, isaBus] + Array("ISA   ".utf8)                   // ISA
        entries += [2, ioapicID, ioapicVersion, 1] + le32(UInt32(BootLayout.ioapic))
        count += 2
        for irq in 0..<isaIRQs {                                        // I/O interrupt: INT, conforming
            entries += [3, 0, 0, 0, isaBus, UInt8(irq), ioapicID, UInt8(irq)]
            count += 1
        }
        // PCI INTA of each slot (source bus IRQ: slot << 2 | pin), level (0b11 << 2), active low (0b11).
        let fixedBytes = 16 + 44 + entries.count + 2 * 8                // pointer, header, so far, LINT entries
        let slots = min(pciSlots, (maximumSize - fixedBytes) / 8)
        for slot in stride(from: 1, through: slots, by: 1) {
            entries += [3, 0, 0x0F, 0, 0, UInt8(slot << 2), ioapicID, UInt8(PCIHostBridge.intxGSI(slot: slot))]
            count += 1
        }
        entries += [4, 3, 0, 0, isaBus, 0, 0x00, 0]                     // LINT0 of APIC 0: ExtINT
        entries += [4, 1, 0, 0, isaBus, 0, 0xFF, 1]                     // LINT1 of all APICs: NMI
        count += 2

        let tableAddress = address + 16
        var table: [UInt8] = Array("PCMP".utf8)
        table += le16(UInt16(44 + entries.count))   // base table length
        table += [4, 0]                             // spec 1.4, checksum (below)
        table += Array("PASSAGE ".utf8)             // OEM id (8)
        table += Array("PASSAGE-VMM ".utf8)         // product id (12)
        table += le32(0) + le16(0)                  // OEM table pointer, size
        table += le16(count)
        table += le32(UInt32(BootLayout.lapic))
        table += le16(0) + [0, 0]                   // extended table length, checksum, reserved
        table += entries
        table[7] = checksum(table)

        var floating: [UInt8] = Array("_MP_".utf8)
        floating += le32(UInt32(tableAddress))
        floating += [1, 4, 0, 0, 0, 0, 0, 0]        // length 1 (×16), spec 1.4, checksum, features
        floating[10] = checksum(floating)
        return floating + table
    }

    /// The byte that makes `bytes` sum to 0 mod 256.
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
