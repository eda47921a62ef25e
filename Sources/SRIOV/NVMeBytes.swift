/// Little-endian field readers for NVMe data structures (Identify data is little-endian).
/// Out-of-range reads return 0, so a short buffer parses as "field absent" rather than trapping;
/// parsers check the length they need up front.
struct NVMeBytes {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u8(_ offset: Int) -> UInt8 {
        offset >= 0 && offset < bytes.count ? bytes[offset] : 0
    }

    func u16(_ offset: Int) -> UInt16 {
        UInt16(u8(offset)) | UInt16(u8(offset + 1)) << 8
    }

    func u32(_ offset: Int) -> UInt32 {
        UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16
    }

    /// An ASCII field padded with spaces (serial number, model), trimmed.
    func ascii(_ offset: Int, _ length: Int) -> String {
        guard offset >= 0, offset + length <= bytes.count else { return "" }
        var slice = bytes[offset..<(offset + length)]
        while let last = slice.last, last == 0x20 || last == 0 { slice.removeLast() }
        while let first = slice.first, first == 0x20 { slice.removeFirst() }
        return String(decoding: slice.map { $0 >= 0x20 && $0 < 0x7f ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }
}
