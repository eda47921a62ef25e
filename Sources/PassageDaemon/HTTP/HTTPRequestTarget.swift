/// The request target (`/v1/devices?class=02&driver=none`) split into path and decoded query.
struct HTTPRequestTarget: Equatable {
    /// Without the query; not percent-decoded (routes match the raw path).
    var path: String
    /// Keys and values percent-decoded, `+` read as a space; the last value wins for repeated keys.
    var query: [String: String]

    init(_ uri: String) {
        var target = Substring(uri)
        // Absolute form (`http://localhost/v1/devices`), which proxies and some clients send.
        if !target.hasPrefix("/"), let colon = target.firstIndex(of: ":"),
           target[..<colon].allSatisfy({ $0.isLetter }), target[colon...].hasPrefix("://") {
            let afterAuthority = target[target.index(colon, offsetBy: 3)...]
            target = afterAuthority.firstIndex(where: { $0 == "/" || $0 == "?" }).map { afterAuthority[$0...] } ?? "/"
        }
        if let hash = target.firstIndex(of: "#") { target = target[..<hash] }
        var query: [String: String] = [:]
        if let q = target.firstIndex(of: "?") {
            path = String(target[..<q])
            for pair in target[target.index(after: q)...].split(separator: "&", omittingEmptySubsequences: true) {
                if let eq = pair.firstIndex(of: "=") {
                    query[Self.decode(pair[..<eq])] = Self.decode(pair[pair.index(after: eq)...])
                } else {
                    query[Self.decode(pair)] = ""
                }
            }
        } else {
            path = String(target)
        }
        if path.isEmpty { path = "/" }
        self.query = query
    }

    /// Percent-decoding for query components; a `%` not followed by two hex digits stays as it is.
    static func decode(_ s: Substring, plusIsSpace: Bool = true) -> String {
        let utf8 = Array(s.utf8)
        guard utf8.contains(where: { $0 == UInt8(ascii: "%") || (plusIsSpace && $0 == UInt8(ascii: "+")) }) else {
            return String(s)
        }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var i = 0
        while i < utf8.count {
            let c = utf8[i]
            if c == UInt8(ascii: "%"), i + 2 < utf8.count, let hi = hex(utf8[i + 1]), let lo = hex(utf8[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else if plusIsSpace && c == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
                i += 1
            } else {
                out.append(c)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
