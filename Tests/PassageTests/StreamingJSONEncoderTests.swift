import Foundation
import Testing
import PassageAPI

@Suite struct StreamingJSONEncoderTests {
    struct Inner: Codable, Equatable {
        var name: String
        var values: [Int]
        var nested: [[String]]
        var flag: Bool?
    }

    struct Outer: Codable, Equatable {
        var id: UInt64
        var negative: Int
        var ratio: Double
        var text: String
        var inner: Inner
        var list: [Inner]
        var empty: [Inner]
        var map: [String: Int]
        var optional: String?

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(negative, forKey: .negative)
            try c.encode(ratio, forKey: .ratio)
            try c.encode(text, forKey: .text)
            try c.encode(inner, forKey: .inner)
            try c.encode(list, forKey: .list)
            try c.encode(empty, forKey: .empty)
            try c.encode(map, forKey: .map)
            try c.encode(optional, forKey: .optional)  // null, not omitted
        }
    }

    static let sample = Outer(
        id: UInt64.max, negative: Int.min, ratio: 0.25,
        text: "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 日本 🚀",
        inner: Inner(name: "a", values: [], nested: [[], ["x"]], flag: nil),
        list: [Inner(name: "b", values: [1, -2, 3], nested: [], flag: true), Inner(name: "c", values: [0], nested: [["y", "z"]], flag: false)],
        empty: [], map: ["k": 1], optional: nil)

    @Test(arguments: [true, false])
    func roundTripsThroughFoundationsDecoder(pretty: Bool) throws {
        let bytes = try StreamingJSONEncoder(pretty: pretty).encode(Self.sample)
        let decoded = try JSONDecoder().decode(Outer.self, from: Data(bytes))
        #expect(decoded == Self.sample)
        // The same document as Foundation's encoder, compared as parsed values, except that absent
        // optionals are null here where Foundation leaves the key out.
        let ours = try JSONSerialization.jsonObject(with: Data(bytes)) as! NSDictionary
        let theirs = try JSONSerialization.jsonObject(with: JSONEncoder().encode(Self.sample)) as! NSDictionary
        #expect(Self.withoutNulls(ours) as! NSDictionary == Self.withoutNulls(theirs) as! NSDictionary)
        #expect(ours["optional"] is NSNull)
        #expect((ours["inner"] as? NSDictionary)?["flag"] is NSNull, "a synthesized optional is written as null")
    }

    /// The parsed document with every null-valued key removed.
    static func withoutNulls(_ v: Any) -> Any {
        if let d = v as? [String: Any] {
            var out: [String: Any] = [:]
            for (k, x) in d where !(x is NSNull) { out[k] = withoutNulls(x) }
            return NSDictionary(dictionary: out)
        }
        if let a = v as? NSArray { return a.map(withoutNulls) as NSArray }
        return v
    }

    @Test func escapesAndLayout() throws {
        let text = String(decoding: try StreamingJSONEncoder(pretty: false).encode(["a\u{1}\"b"]), as: UTF8.self)
        #expect(text == #"["a\u0001\"b"]"#)
        let pretty = String(decoding: try StreamingJSONEncoder(pretty: true).encode(["k": [1, 2]]), as: UTF8.self)
        #expect(pretty == "{\n  \"k\": [\n    1,\n    2\n  ]\n}")
        #expect(String(decoding: try StreamingJSONEncoder().encode([Int]()), as: UTF8.self) == "[]")
        #expect(String(decoding: try StreamingJSONEncoder().encode(Optional<Int>.none), as: UTF8.self) == "null")
    }

    @Test func refusesNonFiniteNumbers() {
        #expect(throws: EncodingError.self) { _ = try StreamingJSONEncoder().encode([Double.nan]) }
        #expect(throws: EncodingError.self) { _ = try StreamingJSONEncoder().encode(["x": Double.infinity]) }
    }
}
