/// Where the boot structures go in guest-physical memory (all below 1 MiB except the kernel
/// and the initramfs). The same layout Firecracker and Cloud Hypervisor use, with the GDT
/// selectors of the Linux 64-bit boot protocol.
public enum BootLayout {
    /// GDT: null, null, __BOOT_CS (0x10), __BOOT_DS (0x18), TSS (0x20).
    public static let gdt: UInt64 = 0x500
    /// An empty IDT (interrupts stay off until the kernel loads its own).
    public static let idt: UInt64 = 0x520
    /// The zero page (`struct boot_params`), passed in %rsi.
    public static let bootParams: UInt64 = 0x7000
    /// Initial stack pointer.
    public static let stack: UInt64 = 0x8FF0
    /// Identity page tables: PML4, one PDPT, four page directories of 2 MiB pages (first 4 GiB).
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xA000
    public static let pageDirectories: UInt64 = 0xB000
    /// The kernel command line.
    public static let commandLine: UInt64 = 0x2_0000
    public static let commandLineMax: UInt64 = 0x1_0000
    /// The MP floating pointer and configuration table, in the last KiB of base memory
    /// (where Linux looks for them), reserved in the e820 map.
    public static let mpTable: UInt64 = 0x9_FC00
    /// End of base memory (the legacy VGA hole follows).
    public static let baseMemoryEnd: UInt64 = 0xA_0000
    /// Three pages KVM needs on Intel for real-mode emulation (`KVM_SET_TSS_ADDR`), and the
    /// EPT identity-map page before them: in the PCI hole, never RAM.
    public static let tss: UInt64 = 0xFFFB_D000
    public static let identityMap: UInt64 = 0xFFFB_C000
    /// Start of the PCI hole below 4 GiB, where guest RAM ends (GuestMemory.pciHoleStart) and
    /// device BARs, the IOAPIC and the local APIC begin.
    public static let pciHoleStart: UInt64 = 0xC000_0000
    /// The in-kernel IOAPIC and local APIC.
    public static let ioapic: UInt64 = 0xFEC0_0000
    public static let lapic: UInt64 = 0xFEE0_0000
    /// GDT selectors of the 64-bit boot protocol.
    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20
}
