import Foundation
import Testing
@testable import VMM

/// A fresh directory under the build folder (not /tmp: the lab hides it; not shared between tests).
private func scratchDirectory(_ name: String) throws -> String {
    let dir = FileManager.default.currentDirectoryPath + "/.build/test-kernel-unpack/\(name)-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Every bzImage in /boot (Debian's 6.1 is xz, its 6.12 zstd): each unpacking test runs on each.
private let hostKernels: [String] = {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
    return names.filter { $0.hasPrefix("vmlinuz-") }.sorted().map { "/boot/" + $0 }
}()

/// The payload of the bzImage at `path`, unpacked by the xz or zstd command (not passage-vmm's
/// library calls): the reference the loader's result is compared with.
private func payloadByCommand(_ path: String) throws -> [UInt8] {
    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    let image = try LinuxBootImage(bytes, name: path)
    func u32(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 | Int(bytes[o + 2]) << 16 | Int(bytes[o + 3]) << 24 }
    let start = image.setupSize + u32(0x248)
    let zstd = bytes[start..<start + 4].elementsEqual([0x28, 0xB5, 0x2F, 0xFD])
    // zstd's frame without the build's 4-byte size trailer (the CLI would take it for another frame).
    let length = u32(0x24C) - (zstd ? 4 : 0)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: zstd ? "/usr/bin/zstd" : "/usr/bin/xz")
    process.arguments = zstd ? ["-dc"] : ["-dc", "--single-stream"]
    let input = Pipe(), output = Pipe()
    // xz --single-stream stops reading at the end of the stream and may exit before the last bytes
    // written (the size trailer) are read: a write to the closed pipe must be EPIPE, not a SIGPIPE
    // that kills the whole test process.
    signal(SIGPIPE, SIG_IGN)
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    let writer = Thread { try? input.fileHandleForWriting.write(contentsOf: Data(bytes[start..<start + length])); try? input.fileHandleForWriting.close() }
    writer.start()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
    return [UInt8](out)
}

private func elf(_ payload: [UInt8]) throws -> LinuxELFImage {
    try LinuxELFImage(header: Array(payload.prefix(64)), fileSize: payload.count, name: "payload") { (o, n) throws(VMMError) in Array(payload[o..<o + n]) }
}

private func load(_ kernel: String, cmdline: String = "console=ttyS0", cache: KernelCache? = nil, random: UInt64? = nil,
                  unpack: KernelUnpackMode = .host) throws -> (LinuxLoader.Loaded, GuestMemory) {
    let memory = try GuestMemory(size: 256 << 20)
    let loaded = try LinuxLoader.load(kernel: kernel, initramfs: nil, commandLine: cmdline, cpus: 1, unpack: unpack,
                                      cache: cache, kaslrRandom: random, into: memory)
    return (loaded, memory)
}

private func guestBytes(_ memory: GuestMemory, _ address: UInt64, _ count: Int) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: memory.pointer(address, count: count)!, count: count))
}

@Suite("VMM: passage-vmm unpacks a bzImage itself (liblzma, cache, KASLR relocation)")
struct VMMKernelUnpackTests {
    // MARK: the relocation table, synthetic

    /// An image of 64 KiB linked at 16 MiB / 0xffffffff81000000 with one field of each kind.
    func syntheticTable() -> (image: [UInt8], payloadTail: [UInt8]) {
        var image = [UInt8](repeating: 0, count: 0x10000)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { withUnsafeBytes(of: v.littleEndian) { image.replaceSubrange(o..<o + $0.count, with: $0) } }
        put(UInt32(0x8100_1000), 0x100)                  // a 32-bit pointer (sign-extended address)
        put(UInt32(bitPattern: -0x0100_2000), 0x200)     // an inverse (negated) 32-bit field
        put(UInt64(0xFFFF_FFFF_8100_3000), 0x300)        // a 64-bit pointer
        let words: [UInt32] = [0, 0x8100_0300, 0, 0x8100_0200, 0, 0x8100_0100]   // 64-bit list, inverse list, 32-bit list
        return (image, words.flatMap { w in withUnsafeBytes(of: w.littleEndian) { Array($0) } })
    }

    @Test("relocations: three zero-terminated lists read back from the payload's end; a slide moves each field")
    func relocationsApply() throws {
        let (original, tail) = syntheticTable()
        let payload = [UInt8](repeating: 0xEE, count: 40) + tail
        let relocs = try #require(try payload.withUnsafeBytes { try KernelRelocations(payload: $0, elfEnd: 40, name: "k") })
        #expect(relocs == KernelRelocations(add32: [0x8100_0100], subtract32: [0x8100_0200], add64: [0x8100_0300]))
        var image = original
        let slide: UInt64 = 0x2A0_0000
        try image.withUnsafeMutableBytes { try relocs.apply(slide: slide, to: $0, mapBase: 0xFFFF_FFFF_8000_0000, loadAddress: 0x100_0000, name: "k") }
        func u32(_ o: Int) -> UInt32 { image.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) } }
        func u64(_ o: Int) -> UInt64 { image.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt64.self) } }
        #expect(u32(0x100) == 0x8100_1000 + 0x2A0_0000)
        #expect(Int32(bitPattern: u32(0x200)) == -0x0100_2000 - 0x2A0_0000)
        #expect(u64(0x300) == 0xFFFF_FFFF_8100_3000 + slide)
        // Nothing else changed.
        var changed = 0
        for i in 0..<image.count where image[i] != original[i] { changed += 1 }
        #expect(changed <= 12)
        // No table (a non-relocatable kernel): nil.
        #expect(try [UInt8](repeating: 1, count: 8).withUnsafeBytes { try KernelRelocations(payload: $0, elfEnd: 8, name: "k") } == nil)
    }

    @Test("relocations: a malformed table or a field outside the image is refused and nothing is changed")
    func relocationsRefused() throws {
        let (original, tail) = syntheticTable()
        func parse(_ bytes: [UInt8], elfEnd: Int) -> String? {
            do { _ = try bytes.withUnsafeBytes { try KernelRelocations(payload: $0, elfEnd: elfEnd, name: "/k") }; return nil } catch { return (error as? VMMError)?.message ?? "\(error)" }
        }
        #expect(parse([1, 2, 3, 4, 5, 6], elfEnd: 0)?.contains("not a relocation table") == true)
        #expect(parse([UInt8](repeating: 0xFF, count: 16), elfEnd: 0)?.contains("without its zero word") == true)
        #expect(parse([0, 0, 0, 0, 1, 0, 0, 0] + tail, elfEnd: 0)?.contains("8 bytes between its ELF file and its relocation table") == true)
        #expect(parse(tail, elfEnd: 30)?.contains("shorter than its ELF file") == true)
        // A field past the image's end (0x81010000 is 64 KiB past 16 MiB): refused before any write.
        let far = KernelRelocations(add32: [0x8100_0100], subtract32: [], add64: [0x8101_0000 - 4])
        var image = original
        #expect(throws: VMMError.self) {
            try image.withUnsafeMutableBytes { try far.apply(slide: 0x20_0000, to: $0, mapBase: 0xFFFF_FFFF_8000_0000, loadAddress: 0x100_0000, name: "/k") }
        }
        #expect(image == original)
    }

    @Test("the slide: 2 MiB-aligned, keeps the image below 1 GiB, covers the range, 0 when nothing else fits")
    func slideRange() {
        let size: UInt64 = 60 << 20, load: UInt64 = 16 << 20, align: UInt64 = 2 << 20
        let slots = 1 + ((1 << 30) - load - size) / align
        for r: UInt64 in [0, 1, 7, slots - 1, slots, UInt64.max, 0x1234_5678_9ABC] {
            let s = KernelRelocations.slide(imageSize: size, loadAddress: load, alignment: align, random: r)
            #expect(s % align == 0 && load + s + size <= 1 << 30)
        }
        #expect(KernelRelocations.slide(imageSize: size, loadAddress: load, alignment: align, random: slots - 1) == (slots - 1) * align)
        #expect(KernelRelocations.slide(imageSize: size, loadAddress: load, alignment: align, random: slots) == 0)
        #expect(KernelRelocations.slide(imageSize: 1 << 30, loadAddress: load, alignment: align, random: 5) == 0)
        #expect(KernelRelocations.slide(imageSize: size, loadAddress: load, alignment: 3 << 20, random: 5) == 0)
    }

    // MARK: the machine's own Debian kernel

    @Test("this machine has Debian kernels in /boot to unpack")
    func hostKernelsExist() {
        #expect(!hostKernels.isEmpty, "no /boot/vmlinuz-* on this machine (apt-get install linux-image-amd64)")
    }

    @Test("the host's /boot/vmlinuz-*: unpacked by liblzma or libzstd, its segments where the ELF says, entered at phys_startup_64",
          arguments: hostKernels)
    func hostKernelUnpacked(path: String) throws {
        let reference = try payloadByCommand(path)
        let vmlinux = try elf(reference)
        let (loaded, memory) = try load(path, cmdline: "console=ttyS0 nokaslr")
        #expect(loaded.kernelSource == "unpacked" && !loaded.kaslr && loaded.kaslrSlide == 0)
        // phys_startup_64: 16 MiB on 6.1, further into the first segment on 6.12.
        #expect(loaded.entryPoint == vmlinux.entryPoint && loaded.entryPoint >= 0x100_0000)
        #expect(vmlinux.segments.contains { (($0.physicalAddress)..<($0.physicalAddress + UInt64($0.fileSize))).contains(loaded.entryPoint) })
        #expect(loaded.kernelEnd == vmlinux.end)
        for seg in vmlinux.segments where seg.fileSize > 0 {
            #expect(guestBytes(memory, seg.physicalAddress, seg.fileSize) == Array(reference[seg.fileOffset..<seg.fileOffset + seg.fileSize]),
                    "segment at 0x\(String(seg.physicalAddress, radix: 16))")
        }
        // The zero page carries the bzImage's own setup header, without KASLR_FLAG under nokaslr.
        let bp = loaded.bootParams
        #expect(guestBytes(memory, bp + 0x202, 4) == Array("HdrS".utf8))
        #expect(memory.load(UInt8.self, at: bp + 0x211)! & 0x02 == 0)
        // Debian's kernel carries the relocation table: tens of thousands of fields.
        let relocs = try #require(try reference.withUnsafeBytes { try KernelRelocations(payload: $0, elfEnd: vmlinux.fileEnd, name: path) })
        #expect(relocs.count > 10_000)
        #expect(vmlinux.kernelMapBase == 0xFFFF_FFFF_8000_0000)
    }

    @Test("the host's /boot/vmlinuz-* with KASLR: every relocated field moves by the slide, nothing else changes",
          arguments: hostKernels)
    func hostKernelRandomized(path: String) throws {
        let reference = try payloadByCommand(path)
        let vmlinux = try elf(reference)
        let relocs = try #require(try reference.withUnsafeBytes { try KernelRelocations(payload: $0, elfEnd: vmlinux.fileEnd, name: path) })
        let (plain, plainMemory) = try load(path, cmdline: "console=ttyS0 nokaslr")
        let (moved, movedMemory) = try load(path, random: 123_457)
        #expect(moved.kaslr && moved.kaslrSlide != 0 && moved.kaslrSlide % (2 << 20) == 0)
        #expect(memory(movedMemory, bootFlagsAt: moved.bootParams) & 0x02 != 0)          // KASLR_FLAG for the kernel
        #expect(moved.kaslrSlide + vmlinux.end <= 1 << 30)
        let slide = moved.kaslrSlide
        let base = vmlinux.segments.map(\.physicalAddress).min()!
        let size = Int(vmlinux.segments.map { $0.physicalAddress + UInt64($0.fileSize) }.max()! - base)
        let a = guestBytes(plainMemory, base, size), b = guestBytes(movedMemory, base, size)
        var touched = [Bool](repeating: false, count: size)
        func at(_ w: UInt32) -> Int { Int(UInt64(bitPattern: Int64(Int32(bitPattern: w))) &- 0xFFFF_FFFF_8000_0000 - base) }
        func u32(_ m: [UInt8], _ o: Int) -> UInt32 { m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) } }
        func u64(_ m: [UInt8], _ o: Int) -> UInt64 { m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt64.self) } }
        var wrong = 0
        for w in relocs.add32 { let o = at(w); if u32(b, o) != u32(a, o) &+ UInt32(truncatingIfNeeded: slide) { wrong += 1 }; for i in o..<o + 4 { touched[i] = true } }
        for w in relocs.subtract32 { let o = at(w); if u32(b, o) != u32(a, o) &- UInt32(truncatingIfNeeded: slide) { wrong += 1 }; for i in o..<o + 4 { touched[i] = true } }
        for w in relocs.add64 { let o = at(w); if u64(b, o) != u64(a, o) &+ slide { wrong += 1 }; for i in o..<o + 8 { touched[i] = true } }
        #expect(wrong == 0)
        var elsewhere = 0
        for i in 0..<size where !touched[i] && a[i] != b[i] { elsewhere += 1 }
        #expect(elsewhere == 0)
        #expect(plain.entryPoint == moved.entryPoint)             // the physical entry does not move
        // A different draw, a different slide.
        let (other, _) = try load(path, random: 987_654_321)
        #expect(other.kaslrSlide != moved.kaslrSlide)
    }

    private func memory(_ m: GuestMemory, bootFlagsAt bp: UInt64) -> UInt8 { m.load(UInt8.self, at: bp + 0x211)! }

    @Test("the cache: the second start reads the unpacked kernel back; a changed bzImage or an untrusted file is unpacked again",
          arguments: hostKernels)
    func cache(path: String) throws {
        let dir = try scratchDirectory("cache-" + path.split(separator: "/").last!)
        let kernel = dir + "/vmlinuz"
        try FileManager.default.copyItem(atPath: path, toPath: kernel)
        let cache = KernelCache(directory: dir + "/cache/kernels")
        let (first, firstMemory) = try load(kernel, cmdline: "nokaslr", cache: cache)
        #expect(first.kernelSource == "unpacked" && first.notes.isEmpty)
        let entries = try FileManager.default.contentsOfDirectory(atPath: cache.directory)
        #expect(entries.count == 1 && entries[0].hasPrefix("vmlinux-"))
        let file = cache.directory + "/" + entries[0]
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o600)
        #expect(try FileManager.default.attributesOfItem(atPath: cache.directory)[.posixPermissions] as? Int == 0o700)
        let (second, secondMemory) = try load(kernel, cmdline: "nokaslr", cache: cache)
        #expect(second.kernelSource == "cached")
        #expect(guestBytes(secondMemory, 0x100_0000, 8 << 20) == guestBytes(firstMemory, 0x100_0000, 8 << 20))
        // KASLR from the cache too (the flag is kept with the payload).
        let (cachedMoved, _) = try load(kernel, cache: cache, random: 99)
        #expect(cachedMoved.kernelSource == "cached" && cachedMoved.kaslr && cachedMoved.kaslrSlide != 0)
        // Writable by others: not trusted, unpacked again and rewritten 0600.
        chmod(file, 0o666)
        #expect(try load(kernel, cmdline: "nokaslr", cache: cache).0.kernelSource == "unpacked")
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o600)
        // The bzImage rewritten (new mtime and ctime): unpacked again.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: kernel)
        #expect(try load(kernel, cmdline: "nokaslr", cache: cache).0.kernelSource == "unpacked")
        #expect(try load(kernel, cmdline: "nokaslr", cache: cache).0.kernelSource == "cached")
        // A cache that cannot be written: the boot goes on, and says why.
        let (noCache, _) = try load(kernel, cmdline: "nokaslr", cache: KernelCache(directory: "/dev/null/kernels"))
        #expect(noCache.kernelSource == "unpacked")
        #expect(noCache.notes.first?.contains("cannot keep the unpacked kernel in /dev/null/kernels") == true)
        // --prepare-kernel: unpacks into the cache once, then says it is there; no cache is an error.
        let other = dir + "/other"
        try FileManager.default.copyItem(atPath: path, toPath: other)
        var config = VMConfig(kernel: other, memory: 256 << 20)
        config.kernelCache = cache.directory
        #expect(try LinuxLoader.prepare(config).hasPrefix("\(other) unpacked into \(cache.directory)/vmlinux-"))
        #expect(try LinuxLoader.prepare(config).hasPrefix("\(other) is already unpacked in "))
        config.kernelCache = "off"
        #expect(throws: VMMError.self) { _ = try LinuxLoader.prepare(config) }
        // KernelCache.resolve: a directory, off, or the default.
        #expect(KernelCache.resolve("/x")?.directory == "/x")
        #expect(KernelCache.resolve("off") == nil)
        #expect(KernelCache.resolve(nil) != nil)
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test("a corrupted xz or zstd payload is an error naming the kernel and nothing is cached; a gzip payload is left to the guest",
          arguments: hostKernels)
    func corruptedAndOtherFormats(path: String) throws {
        let dir = try scratchDirectory("corrupt-" + path.split(separator: "/").last!)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let image = try LinuxBootImage(bytes, name: path)
        func u32(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 | Int(bytes[o + 2]) << 16 | Int(bytes[o + 3]) << 24 }
        let start = image.setupSize + u32(0x248), length = u32(0x24C)
        let original = bytes
        bytes[start + length / 2] ^= 0x55
        let corrupt = dir + "/corrupt"
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        let cache = KernelCache(directory: dir + "/cache")
        do {
            _ = try load(corrupt, cache: cache)
            Issue.record("a corrupted payload loaded")
        } catch let e as VMMError {
            #expect(e.code == .badKernel && e.message.hasPrefix(corrupt) && e.message.contains("corrupted"), "\(e.message)")
        }
        #expect((try? FileManager.default.contentsOfDirectory(atPath: cache.directory))?.isEmpty ?? true)
        // The same file booted by the guest's decompressor loads (the guest would find the damage).
        #expect(try load(corrupt, unpack: .guest).0.kernelSource == "bzimage")
        // Not xz: the classic way, with a note.
        bytes = original
        bytes.replaceSubrange(start..<start + 2, with: [0x1F, 0x8B])
        let gzip = dir + "/gzip"
        try Data(bytes).write(to: URL(fileURLWithPath: gzip))
        let (classic, _) = try load(gzip)
        #expect(classic.kernelSource == "bzimage" && classic.entryPoint == 0x10_0200)
        #expect(classic.notes == ["\(gzip) has a gzip payload; passage-vmm unpacks xz and zstd only: the guest unpacks it"])
        // A trailer claiming an absurd size: refused before allocating it.
        bytes = original
        bytes.replaceSubrange(start + length - 4..<start + length, with: [0xFF, 0xFF, 0xFF, 0x7F])
        let huge = dir + "/huge"
        try Data(bytes).write(to: URL(fileURLWithPath: huge))
        #expect(throws: VMMError.self) { _ = try load(huge) }
        try? FileManager.default.removeItem(atPath: dir)
    }
}
