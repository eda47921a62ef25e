// libFuzzer target: the KASLR relocation table of an unpacked bzImage payload
// (VMM/KernelRelocations.swift), as LinuxLoader uses it: the first two bytes of the input give
// where the ELF file ends, the rest is the payload. Any bytes either give a VMMError of code
// bad-kernel that names the image, nil (no table), or a table whose three lists fill the tail
// exactly; applying it to a 64 KiB image linked at 16 MiB either refuses (bad-kernel, the image
// unchanged) or changes only bytes of the fields it names. No trap, no hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let payload = Array(UnsafeBufferPointer(start: data + 2, count: size - 2))
    let elfEnd = (Int(data[0]) | Int(data[1]) << 8) % (payload.count + 8)    // sometimes past the end
    let table: KernelRelocations?
    do {
        table = try payload.withUnsafeBytes { try KernelRelocations(payload: $0, elfEnd: elfEnd, name: "fuzz.bzImage") }
    } catch {
        let e = error as? VMMError
        precondition(e?.code == .badKernel && e?.message.hasPrefix("fuzz.bzImage ") == true, "\(error)")
        return 0
    }
    guard let table else {
        precondition(elfEnd == payload.count, "no table, but \(payload.count - elfEnd) bytes after the ELF")
        return 0
    }
    precondition(elfEnd + 4 * (table.count + 3) == payload.count, "the lists do not fill the tail exactly")
    precondition(!(table.add32 + table.subtract32 + table.add64).contains(0))
    let original = [UInt8](repeating: 0xA5, count: 0x10000)
    var image = original
    let slide = UInt64(payload.count % 64) << 21
    do {
        try image.withUnsafeMutableBytes {
            try table.apply(slide: slide, to: $0, mapBase: 0xFFFF_FFFF_8000_0000, loadAddress: 0x100_0000, name: "fuzz.bzImage")
        }
    } catch {
        precondition((error as? VMMError)?.code == .badKernel && image == original, "\(error)")
        return 0
    }
    var fields = [Bool](repeating: false, count: image.count)
    func mark(_ w: UInt32, _ width: Int) {
        let o = Int(UInt64(bitPattern: Int64(Int32(bitPattern: w))) &- 0xFFFF_FFFF_8000_0000 &- 0x100_0000)
        precondition(o >= 0 && o + width <= image.count, "field at \(o) applied outside the image")
        for i in o..<o + width { fields[i] = true }
    }
    for w in table.add32 { mark(w, 4) }
    for w in table.subtract32 { mark(w, 4) }
    for w in table.add64 { mark(w, 8) }
    for i in 0..<image.count where image[i] != original[i] { precondition(fields[i], "byte \(i) changed outside every field") }
    return 0
}
