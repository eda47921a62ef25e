import Foundation
import Testing
import SysfsFixtures
@testable import VMM

/// A synthetic bzImage (`SyntheticKernel.bzImage`, shared with crash-torture).
func syntheticBzImage(entryCode: [UInt8] = [0xF4], version: UInt16 = 0x020F, xloadflags: UInt16 = 1,
                      initSize: UInt32 = 0x10_0000) -> [UInt8] {
    SyntheticKernel.bzImage(entryCode: entryCode, version: version, xloadflags: xloadflags, initSize: initSize)
}

/// The newest /boot/vmlinuz-*, if the machine has one.
func hostKernelPath() -> String? {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
    return names.filter { $0.hasPrefix("vmlinuz-") }.sorted().last.map { "/boot/" + $0 }
}

@Suite("bzImage parsing")
struct VMMBootImageTests {
    @Test("the machine's own /boot/vmlinuz parses: protocol ≥ 2.12, 64-bit entry, init_size")
    func hostKernel() throws {
        let path = try #require(hostKernelPath(), "no /boot/vmlinuz-* on this machine (apt-get install linux-image-amd64)")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let image = try LinuxBootImage(bytes, name: path)
        #expect(image.protocolVersion >= 0x020C)
        #expect(image.xloadflags & 1 == 1)
        #expect(image.entryPoint64 == 0x10_0200)
        #expect(image.initSize > UInt32(image.kernelSize))
        #expect(image.setupSize == (Int(bytes[0x1F1]) + 1) * 512)
        // The loader reads only the first sector, then exactly the setup, before the kernel goes
        // straight into guest memory; parsing from that much gives the same image.
        let setup = LinuxBootImage.setupSize(ofFileStart: Array(bytes.prefix(0x400)))
        #expect(setup == image.setupSize)
        let fromSetup = try LinuxBootImage(header: Array(bytes.prefix(setup)), fileSize: bytes.count, name: path)
        #expect(fromSetup.setup == image.setup && fromSetup.kernelSize == image.kernelSize)
        #expect(LinuxBootImage.setupSize(ofFileStart: [0, 1]) == LinuxBootImage.maximumSetupSize)
    }

    @Test("clear errors: not a bzImage, too short, old protocol, 32-bit only, zImage, truncated")
    func errors() {
        func message(_ bytes: [UInt8]) -> String? {
            do { _ = try LinuxBootImage(bytes, name: "K"); return nil } catch {
                #expect(error.code == .badKernel)
                return error.message
            }
        }
        #expect(message(Array(repeating: 0x41, count: 4096))?.contains("not a Linux bzImage") == true)
        #expect(message([1, 2, 3])?.contains("too short") == true)
        #expect(message(syntheticBzImage(version: 0x0209))?.contains("boot protocol 2.9") == true)
        #expect(message(syntheticBzImage(xloadflags: 0))?.contains("64-bit") == true)
        var zImage = syntheticBzImage(); zImage[0x211] = 0
        #expect(message(zImage)?.contains("zImage") == true)
        let full = syntheticBzImage()
        #expect(message(Array(full.prefix(1100)))?.contains("truncated") == true)
        var noHdrS = full; noHdrS[0x203] = 0
        #expect(message(noHdrS)?.contains("HdrS") == true)
        #expect(message(full) == nil)
    }

    @Test("fuzz: mutated and truncated real and synthetic headers never crash, only throw badKernel")
    func fuzz() throws {
        var seeds = [syntheticBzImage(entryCode: Array(repeating: 0xF4, count: 64))]
        if let path = hostKernelPath(), let data = FileManager.default.contents(atPath: path) {
            seeds.append([UInt8](data.prefix(64 * 1024 + 4096))) // the header and a bit of payload
        }
        var rng = SplitMix64(seed: 0x5EED)
        var parsed = 0, refused = 0
        for seed in seeds {
            for round in 0..<3000 {
                var b = seed
                switch round % 4 {
                case 0: // flip bytes in the header
                    for _ in 0..<Int(rng.next() % 8 + 1) { b[0x1F0 + Int(rng.next() % 0x90)] ^= UInt8(truncatingIfNeeded: rng.next() | 1) }
                case 1: // truncate anywhere
                    b = Array(b.prefix(Int(rng.next() % UInt64(b.count))))
                case 2: // random values in the interesting fields
                    for o in [0x1F1, 0x1F4, 0x201, 0x206, 0x207, 0x211, 0x236, 0x260, 0x263] where rng.next() % 2 == 0 {
                        b[o] = UInt8(truncatingIfNeeded: rng.next())
                    }
                default: // garbage of a random length with the magic kept
                    b = (0..<Int(rng.next() % 2048 + 600)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    if b.count > 0x206 { b[0x1FE] = 0x55; b[0x1FF] = 0xAA; b.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8)) }
                }
                do {
                    let image = try LinuxBootImage(b, name: "fuzz")
                    #expect(image.setupSize + image.kernelSize == b.count)
                    #expect(image.headerEnd <= image.setupSize)
                    parsed += 1
                } catch {
                    #expect(error.code == .badKernel)
                    #expect(!error.message.isEmpty)
                    refused += 1
                }
            }
        }
        #expect(refused > 0 && parsed > 0)
    }
}

/// A small deterministic generator for the fuzz loops.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
