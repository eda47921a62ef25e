import CLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Loads a bzImage, an initramfs and a command line into guest memory and writes the zero page
/// (`boot_params`) with the e820 map, as the 64-bit Linux boot protocol asks.
public struct LinuxLoader {
    /// e820 types.
    public enum E820Type: UInt32, Sendable { case ram = 1, reserved = 2 }

    public struct E820Entry: Sendable, Equatable {
        public let address: UInt64
        public let size: UInt64
        public let type: E820Type
    }

    /// What the vCPU needs to start the kernel.
    public struct Loaded: Sendable {
        public let entryPoint: UInt64
        public let bootParams: UInt64
        public let initrdAddress: UInt64
        public let initrdSize: Int
        public let kernelEnd: UInt64
        /// The kernel proper as passage-vmm unpacked it, when it did (host unpacking).
        var unpacked: Unpacked?
        /// `vmlinux` for an ELF kernel: `kernelSource` cannot tell it from a bzImage otherwise.
        var isELF = false
        /// How the kernel got into memory, for `--stats`: `vmlinux`, `bzimage` (the guest unpacks
        /// it), `unpacked` (liblzma, this start) or `cached` (a previous start's unpacking).
        public var kernelSource: String { unpacked?.source ?? (isELF ? "vmlinux" : "bzimage") }
        /// Milliseconds spent unpacking or reading the unpacked kernel (host unpacking only).
        public var unpackMilliseconds: Int { unpacked?.milliseconds ?? 0 }
        /// Whether the kernel's virtual base was randomized here (host unpacking with KASLR).
        public var kaslr: Bool { unpacked?.kaslr ?? false }
        /// The virtual slide applied (not printed: it is the secret KASLR keeps).
        public var kaslrSlide: UInt64 { unpacked?.slide ?? 0 }
        /// Why host unpacking was not used or could not be cached, for the operator.
        public var notes: [String] = []
    }

    /// The memory map Linux gets: base memory up to the MP table, the MP table reserved, the
    /// BIOS area with the ACPI tables reserved, RAM from 1 MiB to the PCI hole, RAM above 4 GiB.
    public static func e820(for memory: GuestMemory) -> [E820Entry] {
        var map = [
            E820Entry(address: 0, size: BootLayout.mpTable, type: .ram),
            E820Entry(address: BootLayout.mpTable, size: BootLayout.baseMemoryEnd - BootLayout.mpTable, type: .reserved),
            E820Entry(address: ACPITables.base, size: ACPITables.areaSize, type: .reserved),
            E820Entry(address: 0x10_0000, size: memory.lowMemoryEnd - 0x10_0000, type: .ram),
        ]
        if memory.regions.count > 1 {
            map.append(E820Entry(address: memory.regions[1].guestAddress, size: memory.regions[1].size, type: .ram))
        }
        return map
    }

    /// Loads everything. `cpus` sizes the MP table; `pciRoot` puts the PCI host bridge in the DSDT;
    /// `unpack` says who unpacks a bzImage, `cache` where unpacked kernels are kept (nil: none);
    /// `kaslrRandom` replaces getrandom's draw of the KASLR slide (tests).
    public static func load(kernel kernelPath: String, initramfs initrdPath: String?, commandLine: String,
                            cpus: Int, pciRoot: Bool = false, unpack: KernelUnpackMode = .guest, cache: KernelCache? = nil,
                            kaslrRandom: UInt64? = nil, into memory: GuestMemory) throws(VMMError) -> Loaded {
        // Only the real-mode setup (boot sector + setup header, 17-33 KiB) or the ELF program
        // headers go through a buffer of the VMM's, and only while they are parsed; the kernel's
        // code and data and the initramfs are pread straight into guest memory, so no copy of
        // them stays resident here.
        let file = try HostFile(kernelPath, what: "the kernel image", code: .badKernel)
        let start = try file.prefix(0x400)
        let entryPoint: UInt64, kernelEnd: UInt64, commandLineMax: Int, initrdAddressMax: UInt64
        let setupHeader: (bytes: [UInt8], end: Int)?    // the bzImage's setup header, copied into the zero page
        var unpacked: Unpacked?, notes: [String] = []
        let isELF = LinuxELFImage.isELF(start)
        if isELF {
            let elf = try LinuxELFImage(header: start, fileSize: file.size, name: kernelPath) { (offset, count) throws(VMMError) in
                try file.bytes(count, at: offset)
            }
            guard elf.end <= memory.lowMemoryEnd else {
                throw VMMError(.notEnoughMemory, "\(kernelPath) needs guest memory up to \(elf.end >> 20) MiB for its segments, more than the \(memory.size >> 20) MiB of guest memory: give the guest more memory (--memory)")
            }
            // Fresh guest memory is zero, so the part of a segment past its file size (bss) is too.
            for seg in elf.segments where seg.fileSize > 0 {
                guard let dst = memory.pointer(seg.physicalAddress, count: seg.fileSize) else {
                    throw VMMError(.notEnoughMemory, "\(kernelPath) does not fit in guest memory")
                }
                try file.read(into: dst, count: seg.fileSize, offset: seg.fileOffset)
            }
            entryPoint = elf.entryPoint
            kernelEnd = elf.end
            commandLineMax = 2047                                 // COMMAND_LINE_SIZE - 1 on x86
            initrdAddressMax = 0x7FFF_FFFF                        // what every 64-bit bzImage says
            setupHeader = nil
        } else {
            let image = try LinuxBootImage(header: try file.prefix(LinuxBootImage.setupSize(ofFileStart: start)),
                                           fileSize: file.size, name: kernelPath)
            unpacked = unpack == .host
                ? try unpackOnHost(image, file: file, cache: cache, commandLine: commandLine, random: kaslrRandom, into: memory, notes: &notes) : nil
            if let unpacked {
                entryPoint = unpacked.entryPoint
                kernelEnd = unpacked.end
            } else {
                // The kernel at 1 MiB; it needs init_size bytes from there.
                let load = LinuxBootImage.loadAddress
                kernelEnd = load + UInt64(max(UInt64(image.initSize), UInt64(image.kernelSize)))
                guard kernelEnd <= memory.lowMemoryEnd else {
                    throw VMMError(.notEnoughMemory, "\(kernelPath) needs \(image.initSize >> 20) MiB from its load address at 1 MiB (init_size), more than the \(memory.size >> 20) MiB of guest memory: give the guest more memory (--memory)")
                }
                guard let kernelDst = memory.pointer(load, count: image.kernelSize) else {
                    throw VMMError(.notEnoughMemory, "\(kernelPath) does not fit in guest memory")
                }
                try file.read(into: kernelDst, count: image.kernelSize, offset: image.setupSize)
                entryPoint = image.entryPoint64
            }
            commandLineMax = Int(image.commandLineMax)
            initrdAddressMax = UInt64(image.initrdAddressMax)
            setupHeader = (image.setup, image.headerEnd)
        }

        // The command line.
        let cmdline = Array(commandLine.utf8)
        let cmdlineMax = min(commandLineMax, Int(BootLayout.commandLineMax) - 1)
        guard cmdline.count <= cmdlineMax else {
            throw VMMError(.badConfiguration, "the kernel command line is \(cmdline.count) bytes; \(kernelPath) accepts at most \(cmdlineMax)")
        }
        guard !cmdline.contains(0) else { throw VMMError(.badConfiguration, "the kernel command line contains a NUL byte") }
        try memory.write(cmdline + [0], at: BootLayout.commandLine)

        // The initramfs: as high as the kernel allows, page-aligned, above the kernel.
        var initrdAddress: UInt64 = 0, initrdSize = 0
        if let initrdPath {
            let initrd = try HostFile(initrdPath, what: "the initramfs", code: .badInitramfs)
            guard initrd.size > 0 else { throw VMMError(.badInitramfs, "the initramfs \(initrdPath) is empty") }
            let top = min(memory.lowMemoryEnd, initrdAddressMax + 1)
            let size = UInt64(initrd.size)
            guard size <= top, (top - size) & ~0xFFF >= kernelEnd else {
                let need = (kernelEnd + size) >> 20 + 1
                throw VMMError(.notEnoughMemory, "the kernel (up to \(kernelEnd >> 20) MiB) and the initramfs \(initrdPath) (\(size >> 20) MiB) need more than \(memory.size >> 20) MiB of guest memory: give the guest at least \(need) MiB (--memory)")
            }
            initrdAddress = (top - size) & ~0xFFF
            guard let dst = memory.pointer(initrdAddress, count: initrd.size) else {
                throw VMMError(.notEnoughMemory, "the initramfs does not fit in guest memory")
            }
            try initrd.read(into: dst, count: initrd.size, offset: 0)
            initrdSize = initrd.size
        }

        // The zero page: the setup header as found in the image, then what the loader fills in.
        let bp = BootLayout.bootParams
        guard let zero = memory.pointer(bp, count: 4096) else { throw VMMError(.notEnoughMemory, "no room for boot_params") }
        zero.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        if let setupHeader {
            try memory.write(setupHeader.bytes[0x1F1..<setupHeader.end], at: bp + 0x1F1)
            // loadflags |= CAN_USE_HEAP, and KASLR_FLAG when the base was randomized here (the
            // decompressor's job otherwise: the kernel then randomizes its memory regions too).
            try memory.store(setupHeader.bytes[0x211] | 0x80 | (unpacked?.kaslr == true ? 0x02 : 0), at: bp + 0x211)
            try memory.store(UInt16(0xFE00), at: bp + 0x224)                           // heap_end_ptr
        } else {
            // vmlinux: no header in the file; what the kernel proper reads, as Firecracker writes it.
            try memory.store(UInt16(0xAA55), at: bp + 0x1FE)                           // boot_flag
            try memory.store(UInt32(0x5372_6448), at: bp + 0x202)                      // header "HdrS"
            try memory.store(UInt8(0x01), at: bp + 0x211)                              // loadflags: LOADED_HIGH
            try memory.store(UInt32(0x100_0000), at: bp + 0x230)                       // kernel_alignment
            try memory.store(UInt32(commandLineMax), at: bp + 0x238)                   // cmdline_size
        }
        try memory.store(UInt8(0xFF), at: bp + 0x210)                                  // type_of_loader: undefined
        try memory.store(UInt32(BootLayout.commandLine), at: bp + 0x228)               // cmd_line_ptr
        try memory.store(UInt32(truncatingIfNeeded: initrdAddress), at: bp + 0x218)    // ramdisk_image
        try memory.store(UInt32(truncatingIfNeeded: initrdSize), at: bp + 0x21C)       // ramdisk_size
        try memory.store(UInt32(truncatingIfNeeded: initrdAddress >> 32), at: bp + 0x0C0) // ext_ramdisk_image
        try memory.store(UInt32(truncatingIfNeeded: UInt64(initrdSize) >> 32), at: bp + 0x0C4)
        let map = e820(for: memory)
        try memory.store(UInt8(map.count), at: bp + 0x1E8)                             // e820_entries
        for (i, e) in map.enumerated() {
            let at = bp + 0x2D0 + UInt64(20 * i)                                       // e820_table
            try memory.store(e.address, at: at)
            try memory.store(e.size, at: at + 8)
            try memory.store(e.type.rawValue, at: at + 16)
        }

        try memory.write(MPTable.build(cpus: cpus, pciSlots: pciRoot ? 31 : 0, at: BootLayout.mpTable), at: BootLayout.mpTable)
        let acpi = ACPITables.build(cpus: cpus, pciRoot: pciRoot)
        try memory.write(acpi.bytes, at: ACPITables.base)
        try memory.store(acpi.rsdp, at: bp + 0x070)                                    // acpi_rsdp_addr (protocol 2.14+)
        var loaded = Loaded(entryPoint: entryPoint, bootParams: bp, initrdAddress: initrdAddress,
                            initrdSize: initrdSize, kernelEnd: kernelEnd)
        loaded.unpacked = unpacked
        loaded.isELF = isELF
        loaded.notes = notes
        return loaded
    }

    /// `passage-vmm --prepare-kernel`: unpacks `config.kernel` into its cache without running a
    /// guest (the memory is mapped, and only the kernel's pages are touched). The line to print,
    /// or an error when there is no cache or the image cannot be unpacked here.
    public static func prepare(_ config: VMConfig) throws(VMMError) -> String {
        guard let cache = KernelCache.resolve(config.kernelCache) else {
            throw VMMError(.badConfiguration, "--prepare-kernel needs a kernel cache, and it is off: give --kernel-cache DIR")
        }
        let memory = try GuestMemory(size: config.memory)
        let loaded = try load(kernel: config.kernel, initramfs: nil, commandLine: "nokaslr", cpus: 1, unpack: .host, cache: cache, into: memory)
        switch loaded.kernelSource {
        case "unpacked" where loaded.notes.isEmpty:
            return "\(config.kernel) unpacked into \(cache.file(for: config.kernel)) in \(loaded.unpackMilliseconds) ms"
        case "cached":
            return "\(config.kernel) is already unpacked in \(cache.file(for: config.kernel))"
        case "vmlinux":
            throw VMMError(.badConfiguration, "\(config.kernel) is a vmlinux already: there is nothing to unpack")
        default:
            throw VMMError(.badKernel, loaded.notes.joined(separator: "; "))
        }
    }

    /// A bzImage's kernel proper, unpacked here and loaded (see `KernelUnpackMode`).
    struct Unpacked {
        let entryPoint: UInt64
        let end: UInt64
        let source: String
        let milliseconds: Int
        let kaslr: Bool
        let slide: UInt64
    }

    /// Unpacks `image`'s xz payload (or takes it from `cache`), loads its ELF segments, and
    /// randomizes its virtual base unless the command line says `nokaslr` or the kernel has no
    /// KASLR. nil — with the reason in `notes` — when the guest's decompressor has to do it: a
    /// payload that is not xz, or one that holds no x86-64 vmlinux. A corrupted xz stream or
    /// relocation table is an error, as it would be in the guest.
    static func unpackOnHost(_ image: LinuxBootImage, file: HostFile, cache: KernelCache?, commandLine: String, random fixed: UInt64?,
                             into memory: GuestMemory, notes: inout [String]) throws(VMMError) -> Unpacked? {
        let path = file.path
        let t0 = MachineTimeline.now()
        guard let payload = try KernelPayload(image: image, read: { (o, n) throws(VMMError) in try file.bytes(n, at: o) }) else {
            notes.append("\(path) has no payload fields in its setup header: the guest unpacks it")
            return nil
        }
        guard KernelPayload.hostFormats.contains(payload.format) else {
            notes.append("\(path) has a \(payload.format.rawValue) payload; passage-vmm unpacks xz and zstd only: the guest unpacks it")
            return nil
        }
        let identity = KernelCache.Identity(fd: file.fd)
        let bytes: MappedBytes, kaslrCapable: Bool, source: String
        if let hit = cache?.lookup(path, identity: identity, size: payload.unpackedSize) {
            (bytes, kaslrCapable, source) = (hit.bytes, hit.kaslr, "cached")
        } else {
            let whole = try MappedBytes(file: file.fd, offset: 0, count: file.size, path: path)
            bytes = try payload.unpack(UnsafeRawBufferPointer(rebasing: whole.bytes[payload.offset..<payload.offset + payload.length]), name: path)
            // The decompressor has KASLR when it was built with CONFIG_RANDOMIZE_BASE, whose
            // messages ("KASLR disabled: 'nokaslr' on cmdline.") are in its code around the payload.
            let marker = Array("KASLR".utf8)
            func has(_ r: Range<Int>) -> Bool {
                let b = whole.bytes
                var i = r.lowerBound
                while i + marker.count <= r.upperBound {
                    if b[i] == marker[0], b[i + 1] == marker[1], b[i + 2] == marker[2], b[i + 3] == marker[3], b[i + 4] == marker[4] { return true }
                    i += 1
                }
                return false
            }
            kaslrCapable = has(image.setupSize..<payload.offset) || has(payload.offset + payload.length..<file.size)
            source = "unpacked"
            if let cache {
                do { try cache.store(path, identity: identity, payload: bytes.bytes, kaslr: kaslrCapable) } catch {
                    notes.append("cannot keep the unpacked kernel in \(cache.directory) (\(error.message)): it is unpacked again at the next start")
                }
            }
        }
        let name = path + " (unpacked)"
        let elf: LinuxELFImage
        do {
            elf = try LinuxELFImage(header: Array(bytes.bytes.prefix(64)), fileSize: bytes.count, name: name) { (o, n) throws(VMMError) in
                Array(bytes.bytes[o..<o + n])
            }
        } catch {
            notes.append("\(path)'s payload is not a loadable vmlinux (\(error.message)): the guest unpacks it")
            return nil
        }
        let relocations = payload.relocatable ? try KernelRelocations(payload: bytes.bytes, elfEnd: elf.fileEnd, name: name) : nil
        guard elf.end <= memory.lowMemoryEnd else {
            throw VMMError(.notEnoughMemory, "\(path) needs guest memory up to \(elf.end >> 20) MiB once unpacked, more than the \(memory.size >> 20) MiB of guest memory: give the guest more memory (--memory)")
        }
        let loadAddress = elf.segments.map(\.physicalAddress).min()!
        let imageEnd = elf.segments.map { $0.physicalAddress + UInt64($0.fileSize) }.max()!
        guard let image = memory.pointer(loadAddress, count: Int(imageEnd - loadAddress)) else {
            throw VMMError(.notEnoughMemory, "\(path) does not fit in guest memory once unpacked")
        }
        // Fresh guest memory is zero, so the part of a segment past its file size (bss) is too.
        for seg in elf.segments where seg.fileSize > 0 {
            (image + Int(seg.physicalAddress - loadAddress)).copyMemory(from: bytes.base + seg.fileOffset, byteCount: seg.fileSize)
        }
        var kaslr = false, slide: UInt64 = 0
        let wantsKASLR = !commandLine.split(separator: " ").contains("nokaslr")
        if let relocations, kaslrCapable, wantsKASLR, let mapBase = elf.kernelMapBase {
            var random: UInt64 = fixed ?? 0
            guard fixed != nil || passage_getrandom(&random, 8) == 8 else { throw VMMError(.io, "getrandom failed: \(String(cString: strerror(errno)))") }
            slide = KernelRelocations.slide(imageSize: max(UInt64(payload.unpackedSize), elf.end - loadAddress),
                                                loadAddress: loadAddress, alignment: payload.alignment, random: random)
            try relocations.apply(slide: slide, to: UnsafeMutableRawBufferPointer(start: image, count: Int(imageEnd - loadAddress)),
                                  mapBase: mapBase, loadAddress: loadAddress, name: name)
            kaslr = true
        }
        return Unpacked(entryPoint: elf.entryPoint, end: elf.end, source: source,
                        milliseconds: Int((MachineTimeline.now() - t0) / 1_000_000), kaslr: kaslr, slide: slide)
    }
}
