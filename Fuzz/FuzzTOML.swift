// libFuzzer target: the policy file's TOML parser (PassageDaemon/Policy/TOML.swift). Any bytes
// either parse to a table or give a TOMLError with a line inside the input; no trap, no hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        _ = try TOMLParser.parse(text)
    } catch {
        let lines = text.utf8.filter { $0 == 0x0a }.count + 1
        precondition(error.line >= 1 && error.line <= lines + 1, "error line \(error.line) outside the \(lines)-line input")
    }
    return 0
}
