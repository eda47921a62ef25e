// libFuzzer target: the bzImage / Linux x86 boot protocol parser (VMM/LinuxBootImage.swift).
// Any bytes either give a VMMError of code bad-kernel that names the image, or a parsed image
// whose numbers are consistent with the input: the setup fits in the file, the kernel after it
// is not empty, the header's end lies inside the setup, the protocol is 2.12 or later and the
// image is 64-bit capable. No trap, no hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = LinuxBootImage.setupSize(ofFileStart: bytes)
    do {
        let image = try LinuxBootImage(bytes, name: "fuzz.bzImage")
        precondition(image.setupSize > 0 && image.setupSize < bytes.count, "setup \(image.setupSize) of a \(bytes.count)-byte file")
        precondition(image.kernelSize > 0 && image.setupSize + image.kernelSize == bytes.count)
        precondition(image.headerEnd <= image.setupSize, "header end \(image.headerEnd) past the setup")
        precondition(image.protocolVersion >= LinuxBootImage.minimumProtocol)
        precondition(image.xloadflags & LinuxBootImage.xlfKernel64 != 0)
    } catch {
        precondition(error.code == .badKernel && error.message.hasPrefix("fuzz.bzImage"), "\(error)")
    }
    return 0
}
