// libFuzzer target: the vmlinux (ELF64) parser (VMM/LinuxELFImage.swift), fed as LinuxLoader
// feeds it: the first KiB as the header, the program headers read from the file on request.
// Any bytes either give a VMMError of code bad-kernel that names the image, or a parsed image
// whose numbers the loader can trust without checking again: the program header table was read
// from inside the file; there is at least one PT_LOAD segment and at most 64; every segment's
// file part lies inside the file and is no larger than its memory size; every segment lies in
// guest memory between 1 MiB and the PCI hole (3 GiB), so `end` does too; no two segments overlap;
// the entry point lies in the file part of a segment. No trap, no hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let start = Array(bytes.prefix(0x400))
    let isELF = LinuxELFImage.isELF(start)
    precondition(isELF == (bytes.count >= 4 && bytes[0..<4].elementsEqual([0x7F, 0x45, 0x4C, 0x46])))
    var reads = 0
    do {
        let image = try LinuxELFImage(header: start, fileSize: bytes.count, name: "fuzz.vmlinux") { (offset, count) throws(VMMError) in
            reads += 1
            precondition(offset >= 0 && count > 0 && offset <= bytes.count && count <= bytes.count - offset,
                         "program headers at \(offset)+\(count) of a \(bytes.count)-byte file")
            return Array(bytes[offset..<offset + count])
        }
        precondition(isELF && reads == 1)
        precondition(!image.segments.isEmpty && image.segments.count <= 64)
        for s in image.segments {
            precondition(s.fileOffset >= 0 && s.fileSize >= 0 && s.fileOffset <= bytes.count && s.fileSize <= bytes.count - s.fileOffset,
                         "segment file part \(s.fileOffset)+\(s.fileSize) of a \(bytes.count)-byte file")
            precondition(UInt64(s.fileSize) <= s.memorySize)
            precondition(s.physicalAddress >= 0x10_0000 && s.physicalAddress <= BootLayout.pciHoleStart
                         && s.memorySize <= BootLayout.pciHoleStart - s.physicalAddress,
                         "segment at 0x\(String(s.physicalAddress, radix: 16)) of 0x\(String(s.memorySize, radix: 16)) bytes")
        }
        precondition(image.end > 0x10_0000 - 1 && image.end <= BootLayout.pciHoleStart)
        let sorted = image.segments.sorted { $0.physicalAddress < $1.physicalAddress }
        for (a, b) in zip(sorted, sorted.dropFirst()) {
            precondition(a.physicalAddress + a.memorySize <= b.physicalAddress, "overlapping segments")
        }
        precondition(image.segments.contains { image.entryPoint >= $0.physicalAddress && image.entryPoint - $0.physicalAddress < UInt64($0.fileSize) },
                     "entry 0x\(String(image.entryPoint, radix: 16)) outside the loaded bytes")
    } catch {
        precondition(error.code == .badKernel && error.message.hasPrefix("fuzz.vmlinux "), "\(error)")
    }
    return 0
}
