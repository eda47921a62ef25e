// Imports conditional so that the fuzz target api-request (scripts/fuzz.sh) can compile this file
// with the request decoding alone.
#if canImport(HostPCI)
import HostPCI
#endif
#if canImport(PassageAPI)
import PassageAPI
#endif

/// Query filters of `GET /v1/devices`: `class`, `vendor` (`8086` or `8086:1572`), `driver` (`none`), `sriov`, `numa`.
struct DeviceQuery: Equatable {
    var classPrefix: (String)?
    var vendor: String?
    var device: String?
    var driver: String?
    var sriov = false
    var numa: Int?

    init(_ q: [String: String]) throws {
        let allowed: Set<String> = ["class", "vendor", "driver", "sriov", "numa", "limit", "after"]
        let unknown = Set(q.keys).subtracting(allowed)
        guard unknown.isEmpty else { throw APIError.badRequest("unknown filter \(unknown.sorted().joined(separator: ", ")); filters: \(allowed.sorted().joined(separator: ", "))") }
        if let c = q["class"] {
            guard [2, 4, 6].contains(c.utf8.count), Self.isHexDigits(c) else { throw APIError.badRequest("class \(c): expected 2, 4 or 6 hex digits") }
            classPrefix = c.lowercased()
        }
        if let v = q["vendor"] {
            let p = v.lowercased().split(separator: ":", omittingEmptySubsequences: false)
            guard (1...2).contains(p.count), p.allSatisfy({ $0.utf8.count == 4 && Self.isHexDigits($0) }) else {
                throw APIError.badRequest("vendor \(v): expected 8086 or 8086:1572")
            }
            vendor = String(p[0])
            device = p.count == 2 ? String(p[1]) : nil
        }
        driver = q["driver"]
        if let s = q["sriov"] { sriov = s == "1" || s == "true" }
        if let n = q["numa"] {
            guard let x = Self.decimal(n, negative: true) else { throw APIError.badRequest("numa \(n): expected a node number") }
            numa = x
        }
        if q["limit"] != nil || q["after"] != nil {
            let limit = try q["limit"].map { t -> Int in
                guard let n = Self.decimal(t), (1...100_000).contains(n) else { throw APIError.badRequest("limit \(t): expected 1 to 100000 devices per page") }
                return n
            } ?? 1000
            let after = try q["after"].map { t -> PCIAddress in
                do { return try PCIAddress(parsing: t) } catch { throw APIError.badRequest("after \(t): expected the PCI address of the last device of the previous page (\(error))") }
            }
            page = Page(limit: limit, after: after)
        }
    }

    /// A decimal number written plainly: digits only (a leading `-` where `negative`), at most 18.
    /// `Int(_:)` alone would also take `+5`, so two spellings would mean one filter.
    static func decimal(_ s: String, negative: Bool = false) -> Int? {
        let digits = negative && s.hasPrefix("-") ? s.dropFirst() : Substring(s)
        guard (1...18).contains(digits.utf8.count), digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int(s)
    }

    /// Hex digits only: `UInt32(_:radix:)` alone would also take a sign (`class=%2B2`, `vendor=-000`).
    static func isHexDigits(_ s: some StringProtocol) -> Bool {
        s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x46).contains($0) || (0x61...0x66).contains($0) }
    }

    /// `limit` devices (default 1000) after the address `after`, in address order; a `Link` header
    /// with `rel="next"` when more follow.
    var page: Page?

    struct Page: Equatable {
        var limit: Int
        var after: PCIAddress?
    }

    var isEmpty: Bool { classPrefix == nil && vendor == nil && driver == nil && !sriov && numa == nil }

    func matches(_ d: DeviceInfo) -> Bool {
        if let c = classPrefix, !d.classCode.hasPrefix(c) { return false }
        if let v = vendor, d.vendorId != v { return false }
        if let v = device, d.deviceId != v { return false }
        if let drv = driver, drv == "none" ? d.driver != nil : d.driver != drv { return false }
        if sriov && d.sriov == nil && d.physfn == nil { return false }
        if let n = numa, d.numaNode != n { return false }
        return true
    }
}
