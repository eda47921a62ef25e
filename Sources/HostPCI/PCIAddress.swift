/// A PCI function address: domain, bus, device (slot) and function.
///
/// The only way to get one from text is `init(parsing:)`, which is strict: sysfs paths are built
/// from the canonical `description` (`DDDD:BB:DD.F`, lowercase hex), never from what a user typed.
public struct PCIAddress: Hashable, Comparable, Sendable {
    public let domain: UInt16
    public let bus: UInt8
    /// Device (slot) number, 0...0x1f.
    public let device: UInt8
    /// Function number, 0...7.
    public let function: UInt8

    public init(domain: UInt16 = 0, bus: UInt8, device: UInt8, function: UInt8) throws(HostPCIError) {
        guard device <= 0x1f else {
            throw .invalidAddress(Self.format(domain, bus, device, function), reason: "device 0x\(hex(device, 2)) is above 0x1f")
        }
        guard function <= 7 else {
            throw .invalidAddress(Self.format(domain, bus, device, function), reason: "function \(function) is above 7")
        }
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses `DDDD:BB:DD.F` or the short `BB:DD.F` (domain 0), hex digits in any case.
    /// Everything else is rejected with an error that says what is wrong.
    public init(parsing text: some StringProtocol) throws(HostPCIError) {
        let input = String(text)
        func fail(_ reason: String) -> HostPCIError { .invalidAddress(input, reason: reason) }

        let bytes = Array(input.utf8)
        guard !bytes.isEmpty else { throw fail("it is empty") }
        guard bytes.count <= 32 else { throw fail("it is \(bytes.count) bytes long") }
        for b in bytes {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
                 UInt8(ascii: "A")...UInt8(ascii: "F"), UInt8(ascii: ":"), UInt8(ascii: "."):
                continue
            case 0: throw fail("it contains a NUL byte")
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                throw fail("it contains white space")
            case UInt8(ascii: "/"): throw fail("it contains '/'")
            default:
                throw fail("it contains the character \(Self.describe(byte: b))")
            }
        }
        if input.contains("..") { throw fail("it contains '..'") }

        let colonParts = bytes.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        let domainDigits: ArraySlice<UInt8>?
        let busDigits: ArraySlice<UInt8>
        let slotFunction: ArraySlice<UInt8>
        switch colonParts.count {
        case 2: (domainDigits, busDigits, slotFunction) = (nil, colonParts[0], colonParts[1])
        case 3: (domainDigits, busDigits, slotFunction) = (colonParts[0], colonParts[1], colonParts[2])
        default: throw fail("expected DDDD:BB:DD.F or BB:DD.F")
        }
        let dotParts = slotFunction.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard dotParts.count == 2 else { throw fail("expected '.' between device and function (DDDD:BB:DD.F)") }
        if colonParts.dropLast().contains(where: { $0.contains(UInt8(ascii: ".")) }) {
            throw fail("expected DDDD:BB:DD.F or BB:DD.F")
        }

        var domain: UInt16 = 0
        if let domainDigits {
            guard let value = Self.hexValue(domainDigits) else { throw fail("the domain is empty") }
            guard value <= 0xffff else { throw fail("domain 0x\(String(value, radix: 16)) is above 0xffff") }
            guard domainDigits.count == 4 else { throw fail("the domain must have 4 hex digits") }
            domain = UInt16(value)
        }
        guard let bus = Self.hexValue(busDigits) else { throw fail("the bus is empty") }
        guard bus <= 0xff else { throw fail("bus 0x\(String(bus, radix: 16)) is above 0xff") }
        guard busDigits.count == 2 else { throw fail("the bus must have 2 hex digits") }
        guard let device = Self.hexValue(dotParts[0]) else { throw fail("the device is empty") }
        guard device <= 0x1f else { throw fail("device 0x\(String(device, radix: 16)) is above 0x1f") }
        guard dotParts[0].count == 2 else { throw fail("the device must have 2 hex digits") }
        guard let function = Self.hexValue(dotParts[1]) else { throw fail("the function is empty") }
        guard function <= 7 else { throw fail("function \(function) is above 7") }
        guard dotParts[1].count == 1 else { throw fail("the function must be one digit, 0 to 7") }

        self.domain = domain
        self.bus = UInt8(bus)
        self.device = UInt8(device)
        self.function = UInt8(function)
    }

    /// Parses the last path component of a sysfs link target such as `../../../devices/pci0000:00/0000:00:1c.0`.
    /// Returns nil for anything that is not exactly a canonical address.
    public static func fromSysfsName(_ name: some StringProtocol) -> PCIAddress? {
        fromSysfsName(bytes: Array(name.utf8)[...])
    }

    /// The same for bytes: exactly `dddd:bb:dd.f` in lowercase hex, with device ≤ 0x1f and function ≤ 7.
    public static func fromSysfsName(bytes b: ArraySlice<UInt8>) -> PCIAddress? {
        guard b.count == 12 else { return nil }
        let s = b.startIndex
        guard b[s + 4] == UInt8(ascii: ":"), b[s + 7] == UInt8(ascii: ":"), b[s + 10] == UInt8(ascii: ".") else { return nil }
        func digit(_ i: Int) -> UInt16? {
            let c = b[s + i]
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt16(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt16(c - UInt8(ascii: "a") + 10)
            default: return nil
            }
        }
        guard let d0 = digit(0), let d1 = digit(1), let d2 = digit(2), let d3 = digit(3),
              let b0 = digit(5), let b1 = digit(6), let s0 = digit(8), let s1 = digit(9), let f = digit(11) else { return nil }
        let device = s0 << 4 | s1
        guard device <= 0x1f, f <= 7 else { return nil }
        return PCIAddress(unchecked: d0 << 12 | d1 << 8 | d2 << 4 | d3, bus: UInt8(b0 << 4 | b1), device: UInt8(device), function: UInt8(f))
    }

    private init(unchecked domain: UInt16, bus: UInt8, device: UInt8, function: UInt8) {
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool {
        (lhs.domain, lhs.bus, lhs.device, lhs.function) < (rhs.domain, rhs.bus, rhs.device, rhs.function)
    }

    private static func hexValue(_ digits: ArraySlice<UInt8>) -> UInt64? {
        guard !digits.isEmpty else { return nil }
        var value: UInt64 = 0
        for d in digits {
            let v: UInt8
            switch d {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = d - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = d - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = d - UInt8(ascii: "A") + 10
            default: return nil
            }
            if value > (UInt64.max >> 8) { return UInt64.max }  // saturate: reported as out of range
            value = value << 4 | UInt64(v)
        }
        return value
    }

    private static func describe(byte: UInt8) -> String {
        if byte >= 0x21 && byte < 0x7f { return "'\(Character(Unicode.Scalar(byte)))'" }
        return "0x\(hex(byte, 2))"
    }

    static func format(_ domain: UInt16, _ bus: UInt8, _ device: UInt8, _ function: UInt8) -> String {
        "\(hex(domain, 4)):\(hex(bus, 2)):\(hex(device, 2)).\(function)"
    }
}

extension PCIAddress: CustomStringConvertible {
    /// Canonical form: `DDDD:BB:DD.F`, lowercase.
    public var description: String { Self.format(domain, bus, device, function) }
}

extension PCIAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        do { self = try PCIAddress(parsing: text) } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: error.message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// Lowercase hex with leading zeros to `width` digits.
@inlinable
public func hex<T: BinaryInteger>(_ value: T, _ width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
