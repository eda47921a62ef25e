/// An uncompressed x86-64 Linux kernel, `vmlinux` (ELF64), as Firecracker and Cloud Hypervisor
/// boot it: every `PT_LOAD` segment copied to its physical address (`p_paddr`, 16 MiB up for a
/// distribution kernel), entered at `e_entry` — `phys_startup_64`, the 64-bit boot protocol
/// entry of arch/x86/kernel/head_64.S — with %rsi at a zero page the loader writes from scratch
/// (there is no setup header in a vmlinux). No decompressor runs, so the guest skips what a
/// bzImage spends first: unpacking itself (xz: seconds under nested virtualization).
public struct LinuxELFImage: Sendable, Equatable {
    public struct Segment: Sendable, Equatable {
        public let fileOffset: Int
        public let physicalAddress: UInt64
        public let fileSize: Int
        public let memorySize: UInt64
        /// `p_vaddr`: where the kernel is linked to run (0xffffffff81000000 up; 0 for x86-64's per-CPU segment).
        public var virtualAddress: UInt64 = 0
    }

    public let entryPoint: UInt64
    public let segments: [Segment]
    /// Where the ELF file's last structure ends (program and section header tables, segments): in
    /// a bzImage's payload, the kernel's relocation table follows from here.
    public let fileEnd: Int
    /// `__START_KERNEL_map`, the virtual address of physical 0 in the kernel's own map: the
    /// segment holding the entry point, `p_vaddr - p_paddr` (0xffffffff80000000 for x86-64 Linux).
    public var kernelMapBase: UInt64? {
        guard let s = segments.first(where: { entryPoint >= $0.physicalAddress && entryPoint - $0.physicalAddress < UInt64($0.fileSize) }),
              s.virtualAddress >= s.physicalAddress else { return nil }
        return s.virtualAddress - s.physicalAddress
    }
    /// End of the highest segment in memory (bss and brk included): the initramfs goes above it.
    public var end: UInt64 { segments.map { $0.physicalAddress + $0.memorySize }.max() ?? 0 }

    /// `\x7fELF` at the start.
    public static func isELF(_ start: [UInt8]) -> Bool {
        start.count >= 4 && start[0] == 0x7F && start[1] == 0x45 && start[2] == 0x4C && start[3] == 0x46
    }

    /// Parses the ELF header (`header`: at least the first 64 bytes) and the program headers
    /// (`programHeaders(offset, count)` reads them), for a file of `fileSize` bytes named `name`.
    public init(header h: [UInt8], fileSize: Int, name: String,
                programHeaders: (_ offset: Int, _ count: Int) throws(VMMError) -> [UInt8]) throws(VMMError) {
        func bad(_ why: String) -> VMMError { VMMError(.badKernel, "\(name) \(why)") }
        func u16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
        func u32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(u16(b, o)) | UInt32(u16(b, o + 2)) << 16 }
        func u64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32 }

        guard h.count >= 64, Self.isELF(h) else { throw bad("is not an ELF file") }
        guard h[4] == 2, h[5] == 1 else { throw bad("is a 32-bit or big-endian ELF file: boot a 64-bit x86_64 vmlinux or a bzImage") }
        guard u16(h, 0x12) == 62 else { throw bad("is an ELF file for machine \(u16(h, 0x12)), not x86-64") }
        guard u16(h, 0x10) == 2 else { throw bad("is an ELF file of type \(u16(h, 0x10)), not an executable (ET_EXEC): pass vmlinux or a bzImage") }
        let entry = u64(h, 0x18)
        let phoff = u64(h, 0x20)
        let phentsize = Int(u16(h, 0x36)), phnum = Int(u16(h, 0x38))
        guard phentsize == 56, phnum > 0, phnum <= 64, phoff < UInt64(fileSize), Int(phoff) + phnum * 56 <= fileSize else {
            throw bad("has a malformed program header table (\(phnum) entries of \(phentsize) bytes at \(phoff)): truncated or corrupted")
        }
        let ph = try programHeaders(Int(phoff), phnum * 56)
        var segments: [Segment] = []
        for i in 0..<phnum where u32(ph, i * 56) == 1 { // PT_LOAD
            let o = i * 56
            let offset = u64(ph, o + 8), vaddr = u64(ph, o + 16), paddr = u64(ph, o + 24), filesz = u64(ph, o + 32), memsz = u64(ph, o + 40)
            guard filesz <= memsz, offset <= UInt64(fileSize), filesz <= UInt64(fileSize) - offset else {
                throw bad("has a PT_LOAD segment (\(i)) reaching past the end of the file: truncated")
            }
            guard paddr >= 0x10_0000, paddr < BootLayout.pciHoleStart, memsz <= BootLayout.pciHoleStart - paddr else {
                throw bad("has a PT_LOAD segment at physical 0x\(String(paddr, radix: 16)), outside 1 MiB … 3 GiB: not a Linux vmlinux")
            }
            segments.append(Segment(fileOffset: Int(offset), physicalAddress: paddr, fileSize: Int(filesz), memorySize: memsz,
                                    virtualAddress: vaddr))
        }
        guard !segments.isEmpty else { throw bad("has no PT_LOAD segment") }
        let sorted = segments.sorted { $0.physicalAddress < $1.physicalAddress }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.physicalAddress + a.memorySize > b.physicalAddress {
            throw bad("has overlapping PT_LOAD segments at 0x\(String(a.physicalAddress, radix: 16)) and 0x\(String(b.physicalAddress, radix: 16))")
        }
        guard segments.contains(where: { entry >= $0.physicalAddress && entry < $0.physicalAddress + UInt64($0.fileSize) }) else {
            throw bad("has its entry point 0x\(String(entry, radix: 16)) outside its loaded segments: not an x86-64 Linux vmlinux (its entry is phys_startup_64)")
        }
        self.entryPoint = entry
        self.segments = segments
        // Section headers (e_shoff, e_shentsize, e_shnum): counted only where they lie inside the file.
        let shoff = u64(h, 0x28), shentsize = UInt64(u16(h, 0x3A)), shnum = UInt64(u16(h, 0x3C))
        var end = Int(phoff) + phnum * 56
        if shoff > 0, shentsize <= 256, shoff <= UInt64(fileSize), shentsize * shnum <= UInt64(fileSize) - shoff {
            end = max(end, Int(shoff + shentsize * shnum))
        }
        for s in segments { end = max(end, s.fileOffset + s.fileSize) }
        self.fileEnd = end
    }
}
