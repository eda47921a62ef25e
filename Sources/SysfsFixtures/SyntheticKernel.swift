/// Kernel images for tests and tools that need a guest to boot without a real kernel.
public enum SyntheticKernel {
    /// A synthetic bzImage: one setup sector, a header of protocol `version`, and a protected-mode
    /// payload whose first 0x200 bytes are padding and then `entryCode` (the 64-bit entry point).
    public static func bzImage(entryCode: [UInt8] = [0xF4], version: UInt16 = 0x020F, xloadflags: UInt16 = 1,
                          initSize: UInt32 = 0x10_0000) -> [UInt8] {
        var payload = [UInt8](repeating: 0x90, count: 0x200) + entryCode
        while payload.count % 16 != 0 { payload.append(0) }
        var b = [UInt8](repeating: 0, count: 1024)
        func put16(_ o: Int, _ v: UInt16) { b[o] = UInt8(v & 0xFF); b[o + 1] = UInt8(v >> 8) }
        func put32(_ o: Int, _ v: UInt32) { put16(o, UInt16(v & 0xFFFF)); put16(o + 2, UInt16(v >> 16)) }
        b[0x1F1] = 1
        put32(0x1F4, UInt32(payload.count / 16))
        put16(0x1FE, 0xAA55)
        b[0x200] = 0xEB; b[0x201] = 0x66
        b.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        put16(0x206, version)
        b[0x211] = 0x01
        put32(0x22C, 0x7FFF_FFFF)
        put32(0x230, 0x20_0000)
        put16(0x236, xloadflags)
        put32(0x238, 2047)
        put32(0x260, initSize)
        return b + payload
    }

    /// 64-bit entry code that prints `text` on COM1, then resets through the i8042 (or halts forever).
    public static func printing(_ text: String, thenReset: Bool) -> [UInt8] {
        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03]                        // mov dx, 0x3f8
        for b in text.utf8 { code += [0xB0, b, 0xEE] }                      // mov al, b; out dx, al
        if thenReset { code += [0xB0, 0xFE, 0xE6, 0x64] }                   // mov al, 0xFE; out 0x64, al
        code += [0xF4, 0xEB, 0xFD]                                          // hlt; jmp hlt
        return bzImage(entryCode: code)
    }
}
