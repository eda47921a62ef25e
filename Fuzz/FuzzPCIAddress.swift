// libFuzzer target: the PCI address parser (HostPCI/PCIAddress.swift). Every input either parses
// to an address whose canonical text parses back to the same address, or is refused with an
// error; nothing else (a trap is a finding).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let a = try? PCIAddress(parsing: text) {
        let again = try? PCIAddress(parsing: a.description)
        precondition(again == a, "\(a) does not survive its own text")
        precondition(a.description.utf8.count == 12)
    }
    return 0
}
