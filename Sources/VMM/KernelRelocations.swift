/// The relocation table an x86-64 bzImage carries for KASLR, and moving a loaded kernel's
/// virtual base by it, as the kernel's own decompressor does (arch/x86/boot/compressed/misc.c,
/// `handle_relocations`) when passage-vmm unpacks the kernel itself.
///
/// A relocatable kernel's compressed payload is `vmlinux.bin` (the stripped ELF) followed by the
/// table arch/x86/tools/relocs writes: 32-bit words, each the kernel virtual address of a field
/// to adjust, in three lists that each end at a zero word, read backwards from the payload's end:
/// 32-bit fields to add the slide to, 32-bit fields to subtract it from (inverse), then 64-bit
/// fields to add it to. Addresses are sign-extended (0x81xxxxxx is 0xffffffff81xxxxxx).
public struct KernelRelocations: Sendable, Equatable {
    /// 32-bit fields that hold an address: `+= slide`.
    public let add32: [UInt32]
    /// 32-bit fields that hold a negated address (per-CPU offsets): `-= slide`.
    public let subtract32: [UInt32]
    /// 64-bit fields that hold an address: `+= slide`.
    public let add64: [UInt32]

    public var count: Int { add32.count + subtract32.count + add64.count }

    public init(add32: [UInt32], subtract32: [UInt32], add64: [UInt32]) {
        self.add32 = add32
        self.subtract32 = subtract32
        self.add64 = add64
    }

    /// Parses the table in `bytes[elfEnd...]` — the payload past the ELF file's end — which must
    /// be exactly the three zero-terminated lists, nothing before or after. An empty tail means
    /// the kernel has no table (not relocatable): nil. `name` is the image's path, for messages.
    public init?(payload bytes: UnsafeRawBufferPointer, elfEnd: Int, name: String) throws(VMMError) {
        func bad(_ why: String) -> VMMError { VMMError(.badKernel, "\(name) \(why)") }
        guard elfEnd >= 0, elfEnd <= bytes.count else { throw bad("has a payload shorter than its ELF file: truncated") }
        let tail = bytes.count - elfEnd
        if tail == 0 { return nil }
        guard tail % 4 == 0, tail >= 12 else {
            throw bad("has \(tail) bytes after its ELF file, not a relocation table (three zero-terminated lists of 32-bit words): corrupted")
        }
        var at = bytes.count
        func list() throws(VMMError) -> [UInt32] {
            var words: [UInt32] = []
            while true {
                guard at - 4 >= elfEnd else { throw bad("has a relocation table that runs into the ELF file (a list without its zero word): corrupted") }
                at -= 4
                let w = UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
                if w == 0 { return words }
                words.append(w)
            }
        }
        add32 = try list()
        subtract32 = try list()
        add64 = try list()
        guard at == elfEnd else {
            throw bad("has \(at - elfEnd) bytes between its ELF file and its relocation table: corrupted")
        }
    }

    /// The field's offset from the kernel's load address, for a relocation `word` whose field is
    /// `width` bytes: the sign-extended virtual address minus `mapBase` (`__START_KERNEL_map`)
    /// minus `loadAddress` (the physical address the image was linked for, 16 MiB). nil if the
    /// field is not wholly inside `0 ..< imageSize` (the image's file-backed bytes).
    @inline(__always)
    static func offset(_ word: UInt32, width: Int, mapBase: UInt64, loadAddress: UInt64, imageSize: Int) -> Int? {
        let virtual = UInt64(bitPattern: Int64(Int32(bitPattern: word)))
        let physical = virtual &- mapBase
        guard physical >= loadAddress, physical - loadAddress <= UInt64(imageSize), UInt64(imageSize) - (physical - loadAddress) >= UInt64(width) else {
            return nil
        }
        return Int(physical - loadAddress)
    }

    /// Moves the kernel's virtual base up by `slide` bytes: adjusts every field in `image`, the
    /// kernel's bytes as loaded from its link-time physical address `loadAddress` (the text
    /// segment's `p_paddr`) up, whose virtual map starts at `mapBase`. Checks every field first
    /// and changes nothing if one lies outside the image.
    public func apply(slide: UInt64, to image: UnsafeMutableRawBufferPointer, mapBase: UInt64, loadAddress: UInt64, name: String) throws(VMMError) {
        let size = image.count
        for (list, width) in [(add32, 4), (subtract32, 4), (add64, 8)] {
            for w in list where Self.offset(w, width: width, mapBase: mapBase, loadAddress: loadAddress, imageSize: size) == nil {
                throw VMMError(.badKernel, "\(name) has a relocation at 0x\(String(UInt64(bitPattern: Int64(Int32(bitPattern: w))), radix: 16)) outside the kernel image (\(size) bytes from physical 0x\(String(loadAddress, radix: 16))): corrupted")
            }
        }
        guard slide != 0, let base = image.baseAddress else { return }
        let s32 = UInt32(truncatingIfNeeded: slide)
        for w in add32 {
            let o = Self.offset(w, width: 4, mapBase: mapBase, loadAddress: loadAddress, imageSize: size)!
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: o, as: UInt32.self) &+ s32, toByteOffset: o, as: UInt32.self)
        }
        for w in subtract32 {
            let o = Self.offset(w, width: 4, mapBase: mapBase, loadAddress: loadAddress, imageSize: size)!
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: o, as: UInt32.self) &- s32, toByteOffset: o, as: UInt32.self)
        }
        for w in add64 {
            let o = Self.offset(w, width: 8, mapBase: mapBase, loadAddress: loadAddress, imageSize: size)!
            base.storeBytes(of: base.loadUnaligned(fromByteOffset: o, as: UInt64.self) &+ slide, toByteOffset: o, as: UInt64.self)
        }
    }

    /// The decompressor's choice of virtual slide (`find_random_virt_addr`): a multiple of
    /// `alignment` (the header's `kernel_alignment`, 2 MiB) that keeps an image of `imageSize`
    /// bytes, linked at `loadAddress`, below `KERNEL_IMAGE_SIZE` (1 GiB with KASLR), drawn from
    /// `random`. 0 when nothing else fits.
    public static func slide(imageSize: UInt64, loadAddress: UInt64, alignment: UInt64, random: UInt64) -> UInt64 {
        let kernelImageSize: UInt64 = 1 << 30
        guard alignment > 0, alignment & (alignment - 1) == 0, loadAddress < kernelImageSize,
              imageSize <= kernelImageSize - loadAddress else { return 0 }
        let slots = 1 + (kernelImageSize - loadAddress - imageSize) / alignment
        return (random % slots) * alignment
    }
}
