/// A JSON encoder for the wire types that writes bytes as `encode(to:)` runs, with no intermediate
/// tree, no key sorting and no dynamic casts: several times faster than Foundation's `JSONEncoder`
/// on a 4,096-device inventory. Keys come out in the order each type encodes them.
///
/// Optional properties are written as `null`, not left out (`encodeIfPresent` writes null): the wire
/// contract is that every key is always present, so synthesized `Codable` conformances suffice.
///
/// Containers have no "end" call in `Encoder`, so open containers are kept on a stack and closed
/// when a write happens at a shallower depth, and at the end. Non-finite floating-point values
/// are refused, as JSON has no spelling for them.
public struct StreamingJSONEncoder: Sendable {
    public var pretty: Bool

    public init(pretty: Bool = true) { self.pretty = pretty }

    public func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let state = StreamState(pretty: pretty)
        try state.encodeValue(value, depth: 0)
        state.closeAll()
        return state.out
    }
}

final class StreamState {
    var out: [UInt8] = []
    let pretty: Bool
    /// Open containers: is it an object, and how many members has it written.
    var stack: [(isObject: Bool, count: Int)] = []
    /// Set when a value position is open (after a key, or an array slot) and nothing filled it yet.
    var pendingValue = false

    init(pretty: Bool) {
        self.pretty = pretty
        out.reserveCapacity(1 << 16)
    }

    // MARK: structure

    /// Closes containers deeper than `depth` (their owners are done with them).
    func close(to depth: Int) {
        while stack.count > depth {
            let frame = stack.removeLast()
            if frame.count > 0 { newline(stack.count) }
            out.append(frame.isObject ? UInt8(ascii: "}") : UInt8(ascii: "]"))
        }
    }

    func closeAll() { close(to: 0) }

    func newline(_ level: Int) {
        guard pretty else { return }
        out.append(UInt8(ascii: "\n"))
        for _ in 0..<level { out.append(UInt8(ascii: " ")); out.append(UInt8(ascii: " ")) }
    }

    /// Starts a member of the container at `depth - 1` (the container the caller owns): closes deeper
    /// containers, writes the separator and, for objects, the key.
    func beginMember(depth: Int, key: String?) {
        close(to: depth)
        guard !stack.isEmpty else { return }
        if stack[stack.count - 1].count > 0 { out.append(UInt8(ascii: ",")) }
        stack[stack.count - 1].count += 1
        newline(stack.count)
        if let key {
            writeString(key)
            out.append(UInt8(ascii: ":"))
            if pretty { out.append(UInt8(ascii: " ")) }
        }
    }

    func open(isObject: Bool) {
        out.append(isObject ? UInt8(ascii: "{") : UInt8(ascii: "["))
        stack.append((isObject, 0))
    }

    /// Encodes a nested value at the current position; a value that writes nothing becomes `{}`.
    func encodeValue<T: Encodable>(_ value: T, depth: Int) throws {
        pendingValue = true
        let encoder = StreamEncoder(state: self, depth: depth, codingPath: [])
        try value.encode(to: encoder)
        if pendingValue {
            pendingValue = false
            out.append(contentsOf: "{}".utf8)
        }
    }

    // MARK: scalars

    func writeString(_ s: String) {
        var s = s
        s.withUTF8 { bytes in
            out.append(UInt8(ascii: "\""))
            var clean = bytes.startIndex  // start of the run not yet copied
            for i in bytes.indices {
                let b = bytes[i]
                guard b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[clean..<i]))
                clean = i + 1
                switch b {
                case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case UInt8(ascii: "\n"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case UInt8(ascii: "\r"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case UInt8(ascii: "\t"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                default:
                    let hexDigits: StaticString = "0123456789abcdef"
                    let h = hexDigits.utf8Start
                    out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                            h[Int(b >> 4)], h[Int(b & 0xf)]])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[clean...]))
            out.append(UInt8(ascii: "\""))
        }
    }

    func writeInteger<T: BinaryInteger>(_ v: T) {
        if v == 0 { out.append(UInt8(ascii: "0")); return }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buf in
            var i = 24
            var magnitude = v.magnitude
            while magnitude > 0 {
                i -= 1
                buf[i] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            }
            if v < 0 { i -= 1; buf[i] = UInt8(ascii: "-") }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[i...]))
        }
    }

    func writeDouble(_ v: Double, codingPath: [any CodingKey]) throws {
        guard v.isFinite else {
            throw EncodingError.invalidValue(v, .init(codingPath: codingPath, debugDescription: "\(v) has no JSON form"))
        }
        if v == v.rounded(), abs(v) < 1e15 { writeInteger(Int64(v)) } else { out.append(contentsOf: "\(v)".utf8) }
    }
}

struct StreamEncoder: Encoder {
    let state: StreamState
    /// Stack depth at which this encoder's single container lives.
    let depth: Int
    var codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        state.pendingValue = false
        state.close(to: depth)
        state.open(isObject: true)
        return KeyedEncodingContainer(StreamKeyed<Key>(state: state, depth: depth + 1, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        state.pendingValue = false
        state.close(to: depth)
        state.open(isObject: false)
        return StreamUnkeyed(state: state, depth: depth + 1, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        StreamSingle(state: state, depth: depth, codingPath: codingPath)
    }
}

struct StreamKeyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let state: StreamState
    let depth: Int
    var codingPath: [any CodingKey]

    private func begin(_ key: Key) { state.beginMember(depth: depth, key: key.stringValue) }

    mutating func encodeNil(forKey key: Key) throws { begin(key); state.out.append(contentsOf: "null".utf8) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { begin(key); state.out.append(contentsOf: (value ? "true" : "false").utf8) }
    mutating func encode(_ value: String, forKey key: Key) throws { begin(key); state.writeString(value) }
    mutating func encode(_ value: Double, forKey key: Key) throws { begin(key); try state.writeDouble(value, codingPath: codingPath + [key]) }
    mutating func encode(_ value: Float, forKey key: Key) throws { begin(key); try state.writeDouble(Double(value), codingPath: codingPath + [key]) }
    mutating func encode(_ value: Int, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { begin(key); state.writeInteger(value) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        begin(key)
        try state.encodeValue(value, depth: depth)
    }

    // Absent optionals are written as null: every key of the wire types is always present.
    mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Float?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int8?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int16?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt8?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt16?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt32?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws { try encodeOrNull(value, key) }

    private mutating func encodeOrNull<T: Encodable>(_ value: T?, _ key: Key) throws {
        if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        begin(key)
        state.open(isObject: true)
        return KeyedEncodingContainer(StreamKeyed<NestedKey>(state: state, depth: depth + 1, codingPath: codingPath + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        begin(key)
        state.open(isObject: false)
        return StreamUnkeyed(state: state, depth: depth + 1, codingPath: codingPath + [key])
    }

    mutating func superEncoder() -> any Encoder { superEncoder(forKey: Key(stringValue: "super")!) }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        begin(key)
        state.pendingValue = true
        return StreamEncoder(state: state, depth: depth, codingPath: codingPath + [key])
    }
}

struct StreamUnkeyed: UnkeyedEncodingContainer {
    let state: StreamState
    let depth: Int
    var codingPath: [any CodingKey]
    var count = 0

    private mutating func begin() { state.beginMember(depth: depth, key: nil); count += 1 }

    mutating func encodeNil() throws { begin(); state.out.append(contentsOf: "null".utf8) }
    mutating func encode(_ value: Bool) throws { begin(); state.out.append(contentsOf: (value ? "true" : "false").utf8) }
    mutating func encode(_ value: String) throws { begin(); state.writeString(value) }
    mutating func encode(_ value: Double) throws { begin(); try state.writeDouble(value, codingPath: codingPath) }
    mutating func encode(_ value: Float) throws { begin(); try state.writeDouble(Double(value), codingPath: codingPath) }
    mutating func encode(_ value: Int) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int8) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int16) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int32) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int64) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt8) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt16) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt32) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt64) throws { begin(); state.writeInteger(value) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        begin()
        try state.encodeValue(value, depth: depth)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        begin()
        state.open(isObject: true)
        return KeyedEncodingContainer(StreamKeyed<NestedKey>(state: state, depth: depth + 1, codingPath: codingPath))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        begin()
        state.open(isObject: false)
        return StreamUnkeyed(state: state, depth: depth + 1, codingPath: codingPath)
    }

    mutating func superEncoder() -> any Encoder {
        begin()
        state.pendingValue = true
        return StreamEncoder(state: state, depth: depth, codingPath: codingPath)
    }
}

/// A single value at the position the parent opened (after a key, in an array slot, or at the top).
struct StreamSingle: SingleValueEncodingContainer {
    let state: StreamState
    let depth: Int
    var codingPath: [any CodingKey]

    private func begin() {
        state.pendingValue = false
        state.close(to: depth)
    }

    mutating func encodeNil() throws { begin(); state.out.append(contentsOf: "null".utf8) }
    mutating func encode(_ value: Bool) throws { begin(); state.out.append(contentsOf: (value ? "true" : "false").utf8) }
    mutating func encode(_ value: String) throws { begin(); state.writeString(value) }
    mutating func encode(_ value: Double) throws { begin(); try state.writeDouble(value, codingPath: codingPath) }
    mutating func encode(_ value: Float) throws { begin(); try state.writeDouble(Double(value), codingPath: codingPath) }
    mutating func encode(_ value: Int) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int8) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int16) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int32) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: Int64) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt8) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt16) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt32) throws { begin(); state.writeInteger(value) }
    mutating func encode(_ value: UInt64) throws { begin(); state.writeInteger(value) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        begin()
        try state.encodeValue(value, depth: depth)
    }
}
