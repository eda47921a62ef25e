import Foundation
import Testing
@testable import VMM

/// A synthetic x86-64 vmlinux: an ELF64 executable with one PT_LOAD segment of `code` at
/// physical `address` (plus `bss` zero bytes in memory), entered at its first byte.
func syntheticVmlinux(code: [UInt8], address: UInt64 = 0x100_0000, bss: UInt64 = 0x1000,
                      machine: UInt16 = 62, elfClass: UInt8 = 2, entry: UInt64? = nil,
                      extraSegments: [(paddr: UInt64, size: UInt64)] = []) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x1000)
    func put16(_ o: Int, _ v: UInt16) { b[o] = UInt8(v & 0xFF); b[o + 1] = UInt8(v >> 8) }
    func put32(_ o: Int, _ v: UInt32) { put16(o, UInt16(v & 0xFFFF)); put16(o + 2, UInt16(v >> 16)) }
    func put64(_ o: Int, _ v: UInt64) { put32(o, UInt32(v & 0xFFFF_FFFF)); put32(o + 4, UInt32(v >> 32)) }
    b.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
    b[4] = elfClass; b[5] = 1; b[6] = 1
    put16(0x10, 2)                 // ET_EXEC
    put16(0x12, machine)
    put32(0x14, 1)
    put64(0x18, entry ?? address)
    put64(0x20, 64)                // e_phoff
    put16(0x34, 64); put16(0x36, 56)
    let segments = [(address, UInt64(code.count), UInt64(code.count) + bss, 0x1000)] + extraSegments.map { ($0.paddr, 0, $0.size, 0x1000) }
    put16(0x38, UInt16(segments.count + 1))
    for (i, s) in segments.enumerated() {
        let o = 64 + i * 56
        put32(o, 1)                // PT_LOAD
        put32(o + 4, 7)
        put64(o + 8, UInt64(s.3))  // p_offset
        put64(o + 16, 0xFFFF_FFFF_8000_0000 &+ s.0)
        put64(o + 24, s.0)         // p_paddr
        put64(o + 32, s.1)
        put64(o + 40, s.2)
    }
    put32(64 + segments.count * 56, 4) // a PT_NOTE, ignored
    return b + code
}

@Suite("vmlinux (ELF) loading", .serialized)
struct VMMELFImageTests {
    func parse(_ bytes: [UInt8]) throws(VMMError) -> LinuxELFImage {
        try LinuxELFImage(header: Array(bytes.prefix(0x400)), fileSize: bytes.count, name: "V") { (o, n) throws(VMMError) in
            Array(bytes[o..<min(o + n, bytes.count)])
        }
    }

    func message(_ bytes: [UInt8]) -> String? {
        do { _ = try parse(bytes); return nil } catch {
            #expect(error.code == .badKernel)
            return error.message
        }
    }

    @Test("PT_LOAD segments at their physical addresses, the entry point, the end with bss")
    func parses() throws {
        let image = try parse(syntheticVmlinux(code: [0xF4], address: 0x100_0000, bss: 0x2000, extraSegments: [(0x200_0000, 0x5000)]))
        #expect(image.entryPoint == 0x100_0000)
        #expect(image.segments.count == 2)
        #expect(image.segments[0] == .init(fileOffset: 0x1000, physicalAddress: 0x100_0000, fileSize: 1, memorySize: 0x2001,
                                           virtualAddress: 0xFFFF_FFFF_8100_0000))
        #expect(image.kernelMapBase == 0xFFFF_FFFF_8000_0000)
        #expect(image.end == 0x200_5000)
        #expect(LinuxELFImage.isELF(syntheticVmlinux(code: [0xF4])))
        #expect(!LinuxELFImage.isELF(syntheticBzImage()))
    }

    @Test("clear errors: 32-bit, not x86-64, entry outside, segments out of range, overlapping, truncated")
    func errors() {
        #expect(message(syntheticVmlinux(code: [0xF4], elfClass: 1))?.contains("32-bit") == true)
        #expect(message(syntheticVmlinux(code: [0xF4], machine: 183))?.contains("machine 183, not x86-64") == true)
        #expect(message(syntheticVmlinux(code: [0xF4], entry: 0x50_0000))?.contains("entry point 0x500000 outside") == true)
        #expect(message(syntheticVmlinux(code: [0xF4], address: 0x1000))?.contains("outside 1 MiB") == true)
        #expect(message(syntheticVmlinux(code: [0xF4], address: 0xC000_0000))?.contains("outside 1 MiB") == true)
        #expect(message(syntheticVmlinux(code: [0xF4], extraSegments: [(0x100_0800, 0x1000)]))?.contains("overlapping") == true)
        #expect(message(Array(syntheticVmlinux(code: [0xF4]).prefix(0x800)))?.contains("past the end of the file") == true)
        #expect(message(Array(syntheticVmlinux(code: [0xF4]).prefix(100)))?.contains("program header table") == true)
        // Mutations never crash, only throw badKernel.
        let seed = syntheticVmlinux(code: [0xF4], extraSegments: [(0x200_0000, 0x5000)])
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            var b = seed
            for _ in 0..<Int.random(in: 1...3, using: &rng) { b[Int.random(in: 0..<0x140, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = message(b)
        }
    }

    @Test("a whole machine boots a vmlinux: its entry with rsi = a zero page with HdrS and the command line; reset ends it")
    func machineBootsVmlinux() throws {
        let code: [UInt8] = [
            0x66, 0xBA, 0xF8, 0x03,       // mov dx, 0x3f8
            0xB0, 0x45, 0xEE,             // mov al, 'E'; out dx, al
            0x8B, 0x86, 0x02, 0x02, 0x00, 0x00, // mov eax, [rsi + 0x202]   ("HdrS")
            0xEE,                         // out dx, al              ('H')
            0x8B, 0x86, 0x28, 0x02, 0x00, 0x00, // mov eax, [rsi + 0x228]   (cmd_line_ptr)
            0x8A, 0x00,                   // mov al, [rax]           (first byte of the command line)
            0xEE,                         // out dx, al
            0xB0, 0x0A, 0xEE,             // mov al, '\n'; out dx, al
            0xB0, 0xFE, 0xE6, 0x64,       // mov al, 0xFE; out 0x64, al  (i8042 reset)
            0xF4, 0xEB, 0xFD,             // hlt; jmp hlt
        ]
        let kernel = try tempFile("vmlinux", syntheticVmlinux(code: code))
        let initrd = try tempFile("vmlinux-initrd", Array(repeating: 0x5A, count: 10_000))
        let console = NSTemporaryDirectory() + "passage-vmm-test-\(getpid())-vmlinux-console"
        defer { unlink(kernel); unlink(initrd); unlink(console) }
        let machine = try Machine(config: VMConfig(kernel: kernel, initramfs: initrd, commandLine: "zcmd", memory: 32 << 20, console: .file(console)))
        #expect(machine.loaded.entryPoint == 0x100_0000)
        #expect(machine.loaded.initrdAddress >= machine.loaded.kernelEnd)
        #expect(machine.memory.load(UInt16.self, at: BootLayout.bootParams + 0x1FE) == 0xAA55)
        #expect(machine.memory.load(UInt32.self, at: BootLayout.bootParams + 0x218) == UInt32(machine.loaded.initrdAddress))
        #expect(machine.memory.load(UInt32.self, at: BootLayout.bootParams + 0x21C) == 10_000)
        #expect(machine.memory.load(UInt8.self, at: BootLayout.bootParams + 0x210) == 0xFF)
        let exit = try machine.run()
        #expect(exit == .reset)
        #expect(try String(contentsOfFile: console, encoding: .utf8) == "EHz\n")
    }

    @Test("a vmlinux too big for the memory asked for is refused before anything runs")
    func tooBig() throws {
        let kernel = try tempFile("vmlinux-big", syntheticVmlinux(code: [0xF4], address: 0x100_0000, bss: 40 << 20))
        defer { unlink(kernel) }
        let e = #expect(throws: VMMError.self) { _ = try Machine(config: VMConfig(kernel: kernel, memory: 32 << 20)) }
        #expect(e?.code == .notEnoughMemory)
        #expect(e?.message.contains("give the guest more memory") == true)
    }
}
