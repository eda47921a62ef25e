/// A JSON value as `StrictJSON` parses it. Numbers keep their literal text (already checked
/// against the JSON grammar), so whoever reads one decides what it may be (`integerValue`).
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in file order; duplicates are kept for the reader to refuse.
    case object([JSONMember])

    /// "a string", "a number", … for messages.
    public var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number(let text): "a number (\(text))"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// The number as an `Int` when its literal is a whole number without fraction or exponent
    /// that fits; nil otherwise (also for non-numbers).
    public var integerValue: Int? {
        guard case .number(let text) = self else { return nil }
        return Int(text)
    }
}

public struct JSONMember: Sendable, Equatable {
    public let key: String
    public let value: JSONValue
    public init(key: String, value: JSONValue) {
        self.key = key
        self.value = value
    }
}

/// Where and why a text is not JSON (1-based line and column, columns in bytes).
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public let line: Int
    public let column: Int
    public let reason: String
    public var description: String { "line \(line), column \(column): \(reason)" }
}

/// A small strict JSON parser (RFC 8259) with no Foundation: one value and nothing after it but
/// whitespace, no comments, no trailing commas, no leading zeros, no NaN, strings valid UTF-8
/// without raw control characters, surrogates paired, nesting at most `maximumDepth` deep.
/// It is for configuration files: kilobytes, not megabytes.
public enum StrictJSON {
    public static let maximumDepth = 64

    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONSyntaxError) -> JSONValue {
        var p = Parser(bytes: Array(bytes))
        p.skipWhitespace()
        let value = try p.value(depth: 0)
        p.skipWhitespace()
        guard p.at == p.bytes.count else { throw p.error("unexpected \(p.describeNext()) after the JSON value") }
        return value
    }

    struct Parser {
        let bytes: [UInt8]
        var at = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func error(_ reason: String, at offset: Int? = nil) -> JSONSyntaxError {
            let end = min(offset ?? at, bytes.count)
            var line = 1, lineStart = 0
            for i in 0..<end where bytes[i] == 0x0A { line += 1; lineStart = i + 1 }
            return JSONSyntaxError(line: line, column: end - lineStart + 1, reason: reason)
        }

        func describeNext() -> String {
            guard at < bytes.count else { return "end of file" }
            let b = bytes[at]
            if b >= 0x21 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
            return "byte 0x\(String(b, radix: 16))"
        }

        var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipWhitespace() {
            while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x09 || bytes[at] == 0x0A || bytes[at] == 0x0D { at += 1 }
        }

        mutating func expect(_ b: UInt8, _ what: String) throws(JSONSyntaxError) {
            guard peek == b else { throw error("expected \(what), found \(describeNext())") }
            at += 1
        }

        mutating func value(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            guard let b = peek else { throw error("expected a value, found end of file") }
            switch b {
            case UInt8(ascii: "{"):
                guard depth < StrictJSON.maximumDepth else { throw error("nested more than \(StrictJSON.maximumDepth) deep") }
                return try object(depth: depth + 1)
            case UInt8(ascii: "["):
                guard depth < StrictJSON.maximumDepth else { throw error("nested more than \(StrictJSON.maximumDepth) deep") }
                return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw error("expected a value, found \(describeNext())")
            }
        }

        mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
            let start = at
            let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            guard bytes.count - at >= w.count, bytes[at..<at + w.count].elementsEqual(w) else {
                throw error("expected a value, found \(describeNext())", at: start)
            }
            at += w.count
        }

        mutating func object(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            at += 1 // {
            var members: [JSONMember] = []
            skipWhitespace()
            if peek == UInt8(ascii: "}") { at += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw error("expected a member name in double quotes, found \(describeNext())") }
                let key = try string()
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "':' after the member name \"\(key)\"")
                skipWhitespace()
                members.append(JSONMember(key: key, value: try value(depth: depth)))
                skipWhitespace()
                if peek == UInt8(ascii: ",") { at += 1; continue }
                try expect(UInt8(ascii: "}"), "',' or '}' after the value of \"\(key)\"")
                return .object(members)
            }
        }

        mutating func array(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            at += 1 // [
            var elements: [JSONValue] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") { at += 1; return .array(elements) }
            while true {
                skipWhitespace()
                elements.append(try value(depth: depth))
                skipWhitespace()
                if peek == UInt8(ascii: ",") { at += 1; continue }
                try expect(UInt8(ascii: "]"), "',' or ']' in an array")
                return .array(elements)
            }
        }

        /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
        mutating func number() throws(JSONSyntaxError) -> String {
            let start = at
            func isDigit(_ b: UInt8?) -> Bool { b.map { $0 >= 0x30 && $0 <= 0x39 } ?? false }
            if peek == UInt8(ascii: "-") { at += 1 }
            guard isDigit(peek) else { throw error("expected a digit in a number, found \(describeNext())") }
            if peek == UInt8(ascii: "0") {
                at += 1
                if isDigit(peek) { throw error("numbers may not have leading zeros") }
            } else {
                while isDigit(peek) { at += 1 }
            }
            if peek == UInt8(ascii: ".") {
                at += 1
                guard isDigit(peek) else { throw error("expected a digit after the decimal point, found \(describeNext())") }
                while isDigit(peek) { at += 1 }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                at += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
                guard isDigit(peek) else { throw error("expected a digit in the exponent, found \(describeNext())") }
                while isDigit(peek) { at += 1 }
            }
            return String(decoding: bytes[start..<at], as: UTF8.self)
        }

        mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let b = peek else { throw error("\\u needs four hex digits, found end of file") }
                let d: UInt32
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(b - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(b - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(b - UInt8(ascii: "A") + 10)
                default: throw error("\\u needs four hex digits, found \(describeNext())")
                }
                v = v << 4 | d
                at += 1
            }
            return v
        }

        mutating func string() throws(JSONSyntaxError) -> String {
            let start = at
            at += 1 // "
            var out: [UInt8] = []
            while true {
                guard let b = peek else { throw error("unterminated string", at: start) }
                at += 1
                switch b {
                case UInt8(ascii: "\""):
                    guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8", at: start) }
                    return s
                case UInt8(ascii: "\\"):
                    guard let e = peek else { throw error("unterminated string", at: start) }
                    at += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        let escapeStart = at - 2
                        var scalar = try hex4()
                        if scalar >= 0xD800 && scalar < 0xDC00 {
                            guard bytes.count - at >= 2, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                                throw error("unpaired surrogate \\u\(String(scalar, radix: 16, uppercase: true))", at: escapeStart)
                            }
                            at += 2
                            let low = try hex4()
                            guard low >= 0xDC00 && low < 0xE000 else {
                                throw error("unpaired surrogate \\u\(String(scalar, radix: 16, uppercase: true))", at: escapeStart)
                            }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if scalar >= 0xDC00 && scalar < 0xE000 {
                            throw error("unpaired surrogate \\u\(String(scalar, radix: 16, uppercase: true))", at: escapeStart)
                        }
                        out.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
                    default:
                        throw error("unknown escape '\\\(Character(Unicode.Scalar(e)))' in a string", at: at - 2)
                    }
                case 0..<0x20:
                    throw error("control character 0x\(String(b, radix: 16)) in a string (escape it)", at: at - 1)
                default:
                    out.append(b)
                }
            }
        }
    }

    /// `text` as a JSON string literal: quotes, backslash and control characters escaped, `/` and
    /// non-ASCII as they are.
    public static func quote(_ text: String) -> String {
        var out = "\""
        for s in text.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\u{00}"..."\u{1F}":
                let hex = String(s.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(s)
            }
        }
        return out + "\""
    }
}
