import Foundation

/// The part of TOML the policy file needs, with the line of every value so that errors can say
/// `FILE:LINE: field: problem`: comments, `key = value` (bare and dotted keys), `[table]`,
/// `[[array.of.tables]]` (also nested under the last element: `[[pf.vf]]`), basic and literal
/// strings, integers (decimal, 0x), booleans, arrays, inline tables. No dates, floats or
/// multi-line strings: the policy has no use for them, and they are refused with a clear error.
public enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case boolean(Bool)
    case array([TOMLNode])
    case table(TOMLTable)

    public var typeName: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .boolean: "a boolean"
        case .array: "an array"
        case .table: "a table"
        }
    }
}

/// A value and the line it was written on.
public struct TOMLNode: Sendable, Equatable {
    public var value: TOMLValue
    public var line: Int
}

/// Keys in the order they were written, each with its node.
public struct TOMLTable: Sendable, Equatable {
    public var entries: [(key: String, node: TOMLNode)] = []
    public var line: Int

    public init(line: Int) { self.line = line }

    public subscript(key: String) -> TOMLNode? {
        entries.first { $0.key == key }?.node
    }

    mutating func set(_ key: String, _ node: TOMLNode) {
        if let i = entries.firstIndex(where: { $0.key == key }) { entries[i].node = node } else { entries.append((key, node)) }
    }

    public static func == (a: TOMLTable, b: TOMLTable) -> Bool {
        a.line == b.line && a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.node == $1.node }
    }
}

public struct TOMLError: Error, Sendable, CustomStringConvertible, Equatable {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

public enum TOMLParser {
    public static func parse(_ text: String) throws(TOMLError) -> TOMLTable {
        var p = Parser(Array(text.utf8))
        return try p.document()
    }

    struct Parser {
        let s: [UInt8]
        var i = 0
        var line = 1

        init(_ s: [UInt8]) { self.s = s }

        func fail(_ m: String, at l: Int? = nil) -> TOMLError { TOMLError(line: l ?? line, message: m) }

        var atEnd: Bool { i >= s.count }
        var peek: UInt8? { i < s.count ? s[i] : nil }

        mutating func skipSpaces() { while let c = peek, c == 0x20 || c == 0x09 { i += 1 } }

        /// Spaces, then an optional comment; must then be at the end of the line (consumed).
        mutating func endOfLine() throws(TOMLError) {
            skipSpaces()
            if peek == UInt8(ascii: "#") { while let c = peek, c != 0x0a { i += 1 } }
            if peek == 0x0d { i += 1 }
            guard let c = peek else { return }
            guard c == 0x0a else { throw fail("unexpected \(Self.show(c)) after the value; one key = value per line") }
            i += 1
            line += 1
        }

        /// Blank lines, comments and new lines (inside arrays).
        mutating func skipTrivia() {
            while let c = peek {
                if c == 0x20 || c == 0x09 || c == 0x0d { i += 1 } else if c == 0x0a { i += 1; line += 1 } else if c == UInt8(ascii: "#") {
                    while let d = peek, d != 0x0a { i += 1 }
                } else { return }
            }
        }

        static func show(_ c: UInt8) -> String {
            c >= 0x21 && c < 0x7f ? "'\(Character(Unicode.Scalar(c)))'" : String(format: "byte 0x%02x", c)
        }

        mutating func document() throws(TOMLError) -> TOMLTable {
            var root = TOMLTable(line: 1)
            var current: [String] = []   // path of the table keys go into
            var definedTables = Set<String>()
            while true {
                skipTrivia()
                guard let c = peek else { return root }
                if c == UInt8(ascii: "[") {
                    let l = line
                    i += 1
                    let isArray = peek == UInt8(ascii: "[")
                    if isArray { i += 1 }
                    skipSpaces()
                    let path = try key()
                    skipSpaces()
                    guard peek == UInt8(ascii: "]") else { throw fail("expected ']' to close the table header") }
                    i += 1
                    if isArray {
                        guard peek == UInt8(ascii: "]") else { throw fail("expected ']]' to close the array-of-tables header") }
                        i += 1
                    }
                    try endOfLine()
                    if isArray {
                        try Self.appendTable(&root, path, line: l)
                    } else {
                        let name = path.joined(separator: ".")
                        guard definedTables.insert(name).inserted else { throw fail("table [\(name)] is defined twice", at: l) }
                        try Self.ensureTable(&root, path, line: l)
                    }
                    current = path
                    continue
                }
                let l = line
                let k = try key()
                skipSpaces()
                guard peek == UInt8(ascii: "=") else { throw fail("expected '=' after the key \(k.joined(separator: "."))") }
                i += 1
                skipSpaces()
                let v = try value()
                try endOfLine()
                try Self.insert(&root, current, k, TOMLNode(value: v, line: l))
            }
        }

        /// bare-key or "quoted", dotted.
        mutating func key() throws(TOMLError) -> [String] {
            var parts: [String] = []
            while true {
                skipSpaces()
                if peek == UInt8(ascii: "\"") || peek == UInt8(ascii: "'") {
                    guard case .string(let s) = try value() else { throw fail("bad key") }
                    parts.append(s)
                } else {
                    let start = i
                    while let c = peek, (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f || c == 0x2d { i += 1 }
                    guard i > start else { throw fail(peek.map { "expected a key, found \(Self.show($0))" } ?? "expected a key at the end of the file") }
                    parts.append(String(decoding: s[start..<i], as: UTF8.self))
                }
                skipSpaces()
                guard peek == UInt8(ascii: ".") else { return parts }
                i += 1
            }
        }

        mutating func value() throws(TOMLError) -> TOMLValue {
            guard let c = peek else { throw fail("expected a value at the end of the file") }
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                var out: [UInt8] = []
                while true {
                    guard let d = peek, d != 0x0a else { throw fail("unterminated string (strings end on the same line)") }
                    i += 1
                    if d == UInt8(ascii: "\"") { break }
                    if d == UInt8(ascii: "\\") {
                        guard let e = peek else { throw fail("unterminated string") }
                        i += 1
                        switch e {
                        case UInt8(ascii: "n"): out.append(0x0a)
                        case UInt8(ascii: "t"): out.append(0x09)
                        case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(e)
                        default: throw fail("unsupported escape \\\(Character(Unicode.Scalar(e))) in a string")
                        }
                    } else {
                        out.append(d)
                    }
                }
                return .string(String(decoding: out, as: UTF8.self))
            case UInt8(ascii: "'"):
                i += 1
                let start = i
                while let d = peek, d != UInt8(ascii: "'") {
                    guard d != 0x0a else { throw fail("unterminated literal string") }
                    i += 1
                }
                guard !atEnd else { throw fail("unterminated literal string") }
                let text = String(decoding: s[start..<i], as: UTF8.self)
                i += 1
                return .string(text)
            case UInt8(ascii: "["):
                i += 1
                var items: [TOMLNode] = []
                while true {
                    skipTrivia()
                    if peek == UInt8(ascii: "]") { i += 1; return .array(items) }
                    let l = line
                    items.append(TOMLNode(value: try value(), line: l))
                    skipTrivia()
                    if peek == UInt8(ascii: ",") { i += 1; continue }
                    guard peek == UInt8(ascii: "]") else { throw fail("expected ',' or ']' in the array") }
                }
            case UInt8(ascii: "{"):
                i += 1
                var t = TOMLTable(line: line)
                skipSpaces()
                if peek == UInt8(ascii: "}") { i += 1; return .table(t) }
                while true {
                    let l = line
                    let k = try key()
                    skipSpaces()
                    guard peek == UInt8(ascii: "=") else { throw fail("expected '=' in the inline table") }
                    i += 1
                    skipSpaces()
                    try Self.insert(&t, [], k, TOMLNode(value: try value(), line: l))
                    skipSpaces()
                    if peek == UInt8(ascii: ",") { i += 1; skipSpaces(); continue }
                    guard peek == UInt8(ascii: "}") else { throw fail("expected ',' or '}' in the inline table (inline tables stay on one line)") }
                    i += 1
                    return .table(t)
                }
            default:
                let start = i
                while let d = peek, !(d == 0x20 || d == 0x09 || d == 0x0a || d == 0x0d || d == UInt8(ascii: ",") || d == UInt8(ascii: "]") || d == UInt8(ascii: "}") || d == UInt8(ascii: "#")) { i += 1 }
                let word = String(decoding: s[start..<i], as: UTF8.self)
                if word == "true" { return .boolean(true) }
                if word == "false" { return .boolean(false) }
                let digits = word.replacingOccurrences(of: "_", with: "")
                if digits.hasPrefix("0x"), let n = Int(digits.dropFirst(2), radix: 16) { return .integer(n) }
                if let n = Int(digits) { return .integer(n) }
                if word.isEmpty { throw fail("expected a value, found \(peek.map(Self.show) ?? "the end of the line")") }
                throw fail("\(word) is not a value this file understands (strings are quoted; numbers are integers; true/false)")
            }
        }

        // MARK: building the tree

        static func insert(_ t: inout TOMLTable, _ path: [String], _ key: [String], _ node: TOMLNode) throws(TOMLError) {
            let full = path + key
            try modify(&t, Array(full.dropLast()), line: node.line) { (tab: inout TOMLTable) throws(TOMLError) in
                let k = full.last!
                if let existing = tab[k] {
                    throw TOMLError(line: node.line, message: "\(full.joined(separator: ".")) is already set (line \(existing.line))")
                }
                tab.set(k, node)
            }
        }

        static func ensureTable(_ t: inout TOMLTable, _ path: [String], line: Int) throws(TOMLError) {
            try modify(&t, path, line: line) { (_: inout TOMLTable) throws(TOMLError) in }
        }

        static func appendTable(_ t: inout TOMLTable, _ path: [String], line: Int) throws(TOMLError) {
            try modify(&t, Array(path.dropLast()), line: line) { (tab: inout TOMLTable) throws(TOMLError) in
                let k = path.last!
                var items: [TOMLNode] = []
                if let existing = tab[k] {
                    guard case .array(let a) = existing.value, a.allSatisfy({ if case .table = $0.value { true } else { false } }) else {
                        throw TOMLError(line: line, message: "[[\(path.joined(separator: "."))]]: \(k) is already \(existing.value.typeName) (line \(existing.line))")
                    }
                    items = a
                }
                items.append(TOMLNode(value: .table(TOMLTable(line: line)), line: line))
                tab.set(k, TOMLNode(value: .array(items), line: tab[k]?.line ?? line))
            }
        }

        /// Walks to the table at `path` (creating tables; stepping into the last element of an
        /// array of tables) and runs `body` on it.
        static func modify(_ t: inout TOMLTable, _ path: [String], line: Int, _ body: (inout TOMLTable) throws(TOMLError) -> Void) throws(TOMLError) {
            guard let first = path.first else { return try body(&t) }
            let rest = Array(path.dropFirst())
            var node = t[first] ?? TOMLNode(value: .table(TOMLTable(line: line)), line: line)
            switch node.value {
            case .table(var inner):
                try modify(&inner, rest, line: line, body)
                node.value = .table(inner)
            case .array(var items):
                guard let lastIndex = items.indices.last, case .table(var inner) = items[lastIndex].value else {
                    throw TOMLError(line: line, message: "\(first) is an array of values, not of tables (line \(node.line))")
                }
                try modify(&inner, rest, line: line, body)
                items[lastIndex].value = .table(inner)
                node.value = .array(items)
            default:
                throw TOMLError(line: line, message: "\(first) is \(node.value.typeName) (line \(node.line)), not a table")
            }
            t.set(first, node)
        }
    }
}
