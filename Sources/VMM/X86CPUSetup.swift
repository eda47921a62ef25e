import CLinux
import KVM

/// Puts a vCPU in the state the 64-bit Linux boot protocol starts from: long mode with
/// identity-mapped paging, the boot GDT, boot MSRs, FPU defaults, per-vCPU CPUID, and a local
/// APIC with LINT0 as ExtINT and LINT1 as NMI.
public enum X86CPUSetup {
    // MSR numbers.
    static let msrTSC: UInt32 = 0x10
    static let msrSysenterCS: UInt32 = 0x174, msrSysenterESP: UInt32 = 0x175, msrSysenterEIP: UInt32 = 0x176
    static let msrMiscEnable: UInt32 = 0x1A0
    static let msrMTRRDefType: UInt32 = 0x2FF
    static let msrSTAR: UInt32 = 0xC000_0081, msrLSTAR: UInt32 = 0xC000_0082, msrCSTAR: UInt32 = 0xC000_0083
    static let msrSyscallMask: UInt32 = 0xC000_0084, msrKernelGSBase: UInt32 = 0xC000_0102

    static let cr0PE: UInt64 = 1, cr0ET: UInt64 = 1 << 4, cr0PG: UInt64 = 1 << 31
    static let cr4PAE: UInt64 = 1 << 5
    static let eferLME: UInt64 = 1 << 8, eferLMA: UInt64 = 1 << 10

    /// GDT entries: null, null, 64-bit code (__BOOT_CS 0x10), data (__BOOT_DS 0x18), TSS (0x20).
    static let gdtEntries: [UInt64] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x008F_8B00_0000_FFFF]

    /// Writes the GDT, the empty IDT and identity page tables for the first 4 GiB (2 MiB pages).
    public static func writeBootTables(_ memory: GuestMemory) throws(VMMError) {
        for (i, e) in gdtEntries.enumerated() { try memory.store(e, at: BootLayout.gdt + UInt64(8 * i)) }
        try memory.store(UInt64(0), at: BootLayout.idt)
        try memory.store(BootLayout.pdpt | 0x3, at: BootLayout.pml4)
        for i in 0..<4 {
            let pd = BootLayout.pageDirectories + UInt64(i) * 0x1000
            try memory.store(pd | 0x3, at: BootLayout.pdpt + UInt64(8 * i))
            for j in 0..<512 {
                let address = (UInt64(i) * 512 + UInt64(j)) << 21
                try memory.store(address | 0x83, at: pd + UInt64(8 * j)) // present, writable, 2 MiB page
            }
        }
    }

    static func segment(_ entry: UInt64, selector: UInt16) -> kvm_segment {
        var s = kvm_segment()
        s.base = 0
        s.limit = 0xFFFF_FFFF
        s.selector = selector
        s.type = UInt8((entry >> 40) & 0xF)
        s.present = UInt8((entry >> 47) & 1)
        s.dpl = UInt8((entry >> 45) & 3)
        s.db = UInt8((entry >> 54) & 1)
        s.s = UInt8((entry >> 44) & 1)
        s.l = UInt8((entry >> 53) & 1)
        s.g = UInt8((entry >> 55) & 1)
        return s
    }

    /// Long mode, paging on, boot GDT loaded, segments set; `rip` at the entry point, `rsi` the zero page.
    public static func setBootRegisters(_ vcpu: KVMVirtualCPU, entry: UInt64, bootParams: UInt64) throws(KVMError) {
        var s = try vcpu.specialRegisters()
        s.gdt.base = BootLayout.gdt
        s.gdt.limit = UInt16(gdtEntries.count * 8 - 1)
        s.idt.base = BootLayout.idt
        s.idt.limit = 7
        s.cs = segment(gdtEntries[2], selector: BootLayout.codeSelector)
        let data = segment(gdtEntries[3], selector: BootLayout.dataSelector)
        s.ds = data; s.es = data; s.fs = data; s.gs = data; s.ss = data
        s.tr = segment(gdtEntries[4], selector: BootLayout.tssSelector)
        s.cr0 = cr0PE | cr0ET | cr0PG
        s.cr3 = BootLayout.pml4
        s.cr4 = cr4PAE
        s.efer = eferLME | eferLMA
        try vcpu.setSpecialRegisters(s)

        var r = kvm_regs()
        r.rflags = 2
        r.rip = entry
        r.rsp = BootLayout.stack
        r.rbp = BootLayout.stack
        r.rsi = bootParams
        try vcpu.setRegisters(r)

        var f = kvm_fpu()
        f.fcw = 0x37F
        f.mxcsr = 0x1F80
        try vcpu.setFPU(f)
    }

    /// The MSRs Linux expects a boot loader to leave sane: SYSENTER/SYSCALL zeroed, fast strings
    /// on, MTRRs enabled with write-back default.
    public static func setBootMSRs(_ vcpu: KVMVirtualCPU) throws(KVMError) {
        try vcpu.setMSRs([
            (msrSysenterCS, 0), (msrSysenterESP, 0), (msrSysenterEIP, 0),
            (msrSTAR, 0), (msrCSTAR, 0), (msrKernelGSBase, 0), (msrSyscallMask, 0), (msrLSTAR, 0),
            (msrTSC, 0),
            (msrMiscEnable, 1),
            (msrMTRRDefType, (1 << 11) | 6),
        ])
    }

    /// LINT0 ExtINT (the PIC's path in), LINT1 NMI.
    public static func setLocalInterrupts(_ vcpu: KVMVirtualCPU) throws(KVMError) {
        var lapic = try vcpu.lapic()
        lapic.setDeliveryMode(.lvtLINT0, .extINT)
        lapic.setDeliveryMode(.lvtLINT1, .nmi)
        try vcpu.setLAPIC(lapic)
    }
}
