/// One VF's link settings as the PF's driver reports them in `IFLA_VFINFO_LIST` (RTM_GETLINK with
/// `RTEXT_FILTER_VF`). A field is nil when the driver does not report it (the kernel sends -1 for
/// spoofchk and trust a driver leaves unset, and omits attributes older drivers do not fill).
public struct VFLinkInfo: Sendable, Hashable, Codable {
    public var index: Int
    public var mac: String?
    public var vlan: Int?
    public var qos: Int?
    public var vlanProtocol: VLANProtocol?
    public var spoofCheck: Bool?
    public var trust: Bool?
    public var linkState: VFLinkState?
    /// Mbps, 0 for none.
    public var minTxRate: UInt32?
    /// Mbps, 0 for none.
    public var maxTxRate: UInt32?

    public init(index: Int, mac: String? = nil, vlan: Int? = nil, qos: Int? = nil, vlanProtocol: VLANProtocol? = nil,
                spoofCheck: Bool? = nil, trust: Bool? = nil, linkState: VFLinkState? = nil,
                minTxRate: UInt32? = nil, maxTxRate: UInt32? = nil) {
        self.index = index
        self.mac = mac
        self.vlan = vlan
        self.qos = qos
        self.vlanProtocol = vlanProtocol
        self.spoofCheck = spoofCheck
        self.trust = trust
        self.linkState = linkState
        self.minTxRate = minTxRate
        self.maxTxRate = maxTxRate
    }

    enum CodingKeys: String, CodingKey {
        case index, mac, vlan, qos, vlanProtocol, spoofCheck, trust, linkState, minTxRate, maxTxRate
    }

    /// Explicit encode (not encodeIfPresent): what the driver does not report appears as null.

    /// Where this read-back disagrees with what was set, in words (`vlan: set 100, reads 0`); empty
    /// when all agree. Settings the driver does not report are not compared.
    public func mismatches(with s: VFLinkSettings) -> [String] {
        var out: [String] = []
        func check<T: Equatable>(_ name: String, _ want: T?, _ have: T?, _ show: (T) -> String) {
            guard let want, let have, want != have else { return }
            out.append("\(name): set \(show(want)), reads \(show(have))")
        }
        check("mac", s.mac?.description, mac) { $0 }
        check("vlan", s.vlan, vlan) { "\($0)" }
        if s.vlan != nil { check("qos", s.qos ?? 0, qos) { "\($0)" } }
        if s.vlan != nil, s.vlan != 0 { check("vlan protocol", s.vlanProtocol ?? .dot1Q, vlanProtocol) { $0.rawValue } }
        check("spoofchk", s.spoofCheck, spoofCheck) { $0 ? "on" : "off" }
        check("trust", s.trust, trust) { $0 ? "on" : "off" }
        check("link state", s.linkState, linkState) { $0.rawValue }
        check("min tx rate", s.minTxRate, minTxRate) { "\($0) Mbps" }
        check("max tx rate", s.maxTxRate, maxTxRate) { "\($0) Mbps" }
        return out
    }
}

/// What RTM_GETLINK (with `RTEXT_FILTER_VF`) says about one interface.
public struct NetlinkLink: Sendable, Hashable {
    public var index: Int32
    public var name: String
    /// `IFLA_NUM_VF`: nil when the kernel does not send it (the interface has no parent device, e.g.
    /// veth, or the kernel was not asked for VF information).
    public var numVFs: Int?
    public var vfs: [VFLinkInfo]
    /// `IFLA_INFO_KIND` for software interfaces (`veth`, `bridge`); nil for hardware.
    public var kind: String? = nil
}
