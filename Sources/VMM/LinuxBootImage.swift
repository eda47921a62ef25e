/// A Linux x86 bzImage, parsed and checked by the boot protocol (Documentation/arch/x86/boot.rst).
///
/// Passage enters the kernel at its 64-bit entry point, `startup_64`, 0x200 bytes into the
/// protected-mode code. That entry point exists when `xloadflags` has `XLF_KERNEL_64`, and
/// `xloadflags` itself arrived with protocol 2.12 (Linux 3.8), so 2.12 is the oldest protocol
/// accepted. `init_size` (2.10) says how much memory the kernel needs from its load address.
public struct LinuxBootImage: Sendable {
    /// The oldest boot protocol accepted: 2.12, the first with `xloadflags`.
    public static let minimumProtocol: UInt16 = 0x020C
    /// `XLF_KERNEL_64`: the kernel has the 64-bit entry point at load address + 0x200.
    public static let xlfKernel64: UInt16 = 1 << 0
    /// `LOADED_HIGH`: the protected-mode code is loaded at 0x100000.
    public static let loadedHigh: UInt8 = 1 << 0

    /// The real-mode setup code with the setup header: bytes 0 ..< `setupSize` of the file.
    public let setup: [UInt8]
    /// Where the protected-mode kernel starts in the file; it runs to `fileSize` and is loaded at `loadAddress`.
    public var setupSize: Int { setup.count }
    /// The whole file's size.
    public let fileSize: Int
    /// Size of the protected-mode kernel.
    public var kernelSize: Int { fileSize - setupSize }
    /// Boot protocol version (0x020F = 2.15).
    public let protocolVersion: UInt16
    /// Bytes of memory the kernel needs from its load address, decompression included.
    public let initSize: UInt32
    /// Highest address the initramfs may end at (`initrd_addr_max`).
    public let initrdAddressMax: UInt32
    /// Longest command line the kernel accepts, without the terminating NUL.
    public let commandLineMax: UInt32
    public let xloadflags: UInt16
    /// End of the setup header (0x202 + the jump offset at 0x201): the bytes copied into boot_params.
    public let headerEnd: Int

    /// Where the protected-mode code goes, and where the 64-bit entry point is.
    public static let loadAddress: UInt64 = 0x10_0000
    public var entryPoint64: UInt64 { Self.loadAddress + 0x200 }

    /// `protocolVersion` as "2.15".
    public var protocolText: String { "\(protocolVersion >> 8).\(protocolVersion & 0xFF)" }

    /// The most of a file's start `init(header:fileSize:name:)` needs: 255 setup sectors and the boot sector.
    public static let maximumSetupSize = 256 * 512

    /// How many bytes of the file's start `init(header:fileSize:name:)` needs, from its first
    /// sector (`setup_sects` at 0x1F1; 0 means 4): the boot sector and the setup code. The parser
    /// checks the rest; for a file too short to say, `maximumSetupSize`.
    public static func setupSize(ofFileStart bytes: [UInt8]) -> Int {
        guard bytes.count > 0x1F1 else { return maximumSetupSize }
        let sects = Int(bytes[0x1F1])
        return ((sects == 0 ? 4 : sects) + 1) * 512
    }

    /// Parses a whole bzImage held in memory.
    public init(_ bytes: [UInt8], name: String = "the kernel image") throws(VMMError) {
        try self.init(header: Array(bytes.prefix(Self.maximumSetupSize)), fileSize: bytes.count, name: name)
    }

    /// Parses the start of a bzImage file (`header`: its first `maximumSetupSize` bytes, or all of
    /// it when shorter) whose whole size is `fileSize`. `name` is the file's path, for messages.
    public init(header bytes: [UInt8], fileSize: Int, name: String = "the kernel image") throws(VMMError) {
        func bad(_ why: String) -> VMMError { VMMError(.badKernel, "\(name) \(why)") }
        func u8(_ o: Int) -> UInt8 { bytes[o] }
        func u16(_ o: Int) -> UInt16 { UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }

        guard bytes.count >= 0x270 else {
            throw bad("is \(bytes.count) bytes long, too short to hold a Linux setup header (needs at least 624): not a bzImage, or truncated")
        }
        guard u16(0x1FE) == 0xAA55 else { throw bad("has no boot-sector signature 0xAA55 at 0x1FE: not a Linux bzImage (pass the bzImage, e.g. /boot/vmlinuz-*, not vmlinux or an initramfs)") }
        guard bytes[0x202..<0x206].elementsEqual("HdrS".utf8) else {
            throw bad("has no \"HdrS\" setup header at 0x202: not a Linux bzImage, or a kernel older than 2.6 (boot protocol 2.00)")
        }
        let version = u16(0x206)
        guard version >= Self.minimumProtocol else {
            let text = "\(version >> 8).\(version & 0xFF)"
            throw bad("speaks boot protocol \(text); passage-vmm needs 2.12 or newer (Linux 3.8+) for the 64-bit entry point")
        }
        let xlf = u16(0x236)
        guard xlf & Self.xlfKernel64 != 0 else {
            throw bad("has no 64-bit entry point (XLF_KERNEL_64 clear in xloadflags): boot a 64-bit x86_64 kernel")
        }
        guard u8(0x211) & Self.loadedHigh != 0 else {
            throw bad("is a zImage (LOADED_HIGH clear): only bzImages are supported")
        }
        var setupSects = Int(u8(0x1F1))
        if setupSects == 0 { setupSects = 4 }
        let setupSize = (setupSects + 1) * 512
        guard setupSize < fileSize, setupSize <= bytes.count else {
            throw bad("claims \(setupSects) setup sectors (\(setupSize) bytes) but is only \(fileSize) bytes long: truncated")
        }
        let syssize = Int(u32(0x1F4)) * 16
        guard syssize > 0, setupSize + syssize <= fileSize + 15 else {
            throw bad("is truncated: the header says \(setupSize + syssize) bytes, the file has \(fileSize)")
        }
        let headerEnd = 0x202 + Int(u8(0x201))
        guard headerEnd >= 0x268, headerEnd <= min(setupSize, 0x280) else {
            throw bad("has a setup header ending at 0x\(String(headerEnd, radix: 16)), outside 0x268…0x280: corrupted")
        }
        let initSize = u32(0x260)
        guard initSize > 0 else { throw bad("has init_size 0: corrupted") }
        self.setup = Array(bytes[0..<setupSize])
        self.fileSize = fileSize
        self.protocolVersion = version
        self.initSize = initSize
        self.initrdAddressMax = u32(0x22C)
        self.commandLineMax = u32(0x238)
        self.xloadflags = xlf
        self.headerEnd = headerEnd
    }
}
