/// A MAC address: six bytes, written `aa:bb:cc:dd:ee:ff`.
public struct MACAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Six bytes exactly.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses exactly six colon-separated pairs of hex digits (either case): `02:00:00:00:00:03`.
    /// Nothing else is accepted: no dashes, no dots, no single digits, no white space.
    public init(parsing text: String) throws(SRIOVError) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var out: [UInt8] = []
        for p in parts {
            guard p.utf8.count == 2, p.utf8.allSatisfy(\.isASCIIHexDigit), let b = UInt8(p, radix: 16) else {
                out = []
                break
            }
            out.append(b)
        }
        guard parts.count == 6, out.count == 6 else {
            throw SRIOVError(code: .invalidArgument,
                             message: "invalid MAC address \(text.debugDescription): expected six hex pairs separated by colons, like 02:00:00:00:00:01")
        }
        bytes = out
    }

    public var description: String {
        bytes.map { b in
            let h = String(b, radix: 16)
            return h.count == 1 ? "0" + h : h
        }.joined(separator: ":")
    }

    public var isMulticast: Bool { bytes[0] & 1 == 1 }
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }
}

extension UInt8 {
    fileprivate var isASCIIHexDigit: Bool {
        (0x30...0x39).contains(self) || (0x41...0x46).contains(self) || (0x61...0x66).contains(self)
    }
}

/// The VLAN tag protocol a VF's port VLAN uses.
public enum VLANProtocol: String, Sendable, Hashable, CaseIterable, Codable {
    /// `ETH_P_8021Q` (0x8100): a customer VLAN tag.
    case dot1Q = "802.1Q"
    /// `ETH_P_8021AD` (0x88a8): a service VLAN tag (QinQ).
    case dot1AD = "802.1ad"

    /// The ethertype, host byte order.
    public var ethertype: UInt16 {
        switch self {
        case .dot1Q: 0x8100
        case .dot1AD: 0x88A8
        }
    }

    public init?(ethertype: UInt16) {
        switch ethertype {
        case 0x8100: self = .dot1Q
        case 0x88A8: self = .dot1AD
        default: return nil
        }
    }

    /// Accepts `802.1Q`/`802.1ad` in any case.
    public init(parsing text: String) throws(SRIOVError) {
        switch text.lowercased() {
        case "802.1q": self = .dot1Q
        case "802.1ad": self = .dot1AD
        default:
            throw SRIOVError(code: .invalidArgument, message: "invalid VLAN protocol \(text.debugDescription): expected 802.1Q or 802.1ad")
        }
    }
}

/// A VF's administrative link state (`IFLA_VF_LINK_STATE_*`).
public enum VFLinkState: String, Sendable, Hashable, CaseIterable, Codable {
    /// `IFLA_VF_LINK_STATE_AUTO`: follow the PF's link.
    case auto
    /// `IFLA_VF_LINK_STATE_ENABLE`: always up.
    case enable
    /// `IFLA_VF_LINK_STATE_DISABLE`: always down.
    case disable

    public var kernelValue: UInt32 {
        switch self {
        case .auto: 0
        case .enable: 1
        case .disable: 2
        }
    }

    public init?(kernelValue: UInt32) {
        switch kernelValue {
        case 0: self = .auto
        case 1: self = .enable
        case 2: self = .disable
        default: return nil
        }
    }

    public init(parsing text: String) throws(SRIOVError) {
        guard let s = VFLinkState(rawValue: text.lowercased()) else {
            throw SRIOVError(code: .invalidArgument, message: "invalid link state \(text.debugDescription): expected auto, enable or disable")
        }
        self = s
    }
}

/// Settings for one VF of an SR-IOV NIC, as the PF's driver applies them (`ip link set PF vf N …`).
/// Every field is optional: only what is set is sent.
public struct VFLinkSettings: Sendable, Hashable {
    /// The VF's MAC address (`IFLA_VF_MAC`). All zeros lets the VF choose its own, where the driver allows it.
    public var mac: MACAddress?
    /// Port VLAN id, 0–4095; 0 with qos 0 removes the port VLAN (`IFLA_VF_VLAN`, or `IFLA_VF_VLAN_LIST` with a protocol).
    public var vlan: Int?
    /// 802.1p priority of the port VLAN, 0–7; needs `vlan`.
    public var qos: Int?
    /// The port VLAN's tag protocol; needs `vlan`. When nil, `IFLA_VF_VLAN` (always 802.1Q) is sent.
    public var vlanProtocol: VLANProtocol?
    /// Whether the VF may change its MAC, enter promiscuous mode, … (`IFLA_VF_TRUST`).
    public var trust: Bool?
    /// Whether the PF drops frames the VF sends with a source MAC or VLAN not its own (`IFLA_VF_SPOOFCHK`).
    public var spoofCheck: Bool?
    /// Administrative link state (`IFLA_VF_LINK_STATE`).
    public var linkState: VFLinkState?
    /// Guaranteed transmit rate in Mbps, 0 for none (`IFLA_VF_RATE`).
    public var minTxRate: UInt32?
    /// Transmit rate limit in Mbps, 0 for none (`IFLA_VF_RATE`).
    public var maxTxRate: UInt32?

    public init(mac: MACAddress? = nil, vlan: Int? = nil, qos: Int? = nil, vlanProtocol: VLANProtocol? = nil,
                trust: Bool? = nil, spoofCheck: Bool? = nil, linkState: VFLinkState? = nil,
                minTxRate: UInt32? = nil, maxTxRate: UInt32? = nil) {
        self.mac = mac
        self.vlan = vlan
        self.qos = qos
        self.vlanProtocol = vlanProtocol
        self.trust = trust
        self.spoofCheck = spoofCheck
        self.linkState = linkState
        self.minTxRate = minTxRate
        self.maxTxRate = maxTxRate
    }

    /// True when nothing is set.
    public var isEmpty: Bool {
        mac == nil && vlan == nil && qos == nil && vlanProtocol == nil && trust == nil && spoofCheck == nil
            && linkState == nil && minTxRate == nil && maxTxRate == nil
    }

    /// Checks ranges and combinations; throws `.invalidArgument` naming the setting and the fix.
    public func validate() throws(SRIOVError) {
        func invalid(_ m: String) -> SRIOVError { SRIOVError(code: .invalidArgument, message: m) }
        if isEmpty {
            throw invalid("nothing to set: give at least one of --mac, --vlan, --trust, --spoofchk, --link-state, --min-tx-rate, --max-tx-rate")
        }
        if let mac, mac.isMulticast {
            throw invalid("MAC address \(mac) is a multicast address (lowest bit of the first byte set); a VF needs a unicast address, e.g. 02:00:00:00:00:01")
        }
        if let vlan, !(0...4095).contains(vlan) {
            throw invalid("VLAN id \(vlan) is out of range: expected 0–4095")
        }
        if let qos {
            guard vlan != nil else { throw invalid("a QoS priority needs a VLAN: give --vlan N with --qos \(qos)") }
            guard (0...7).contains(qos) else { throw invalid("QoS priority \(qos) is out of range: expected 0–7") }
        }
        if let p = vlanProtocol, vlan == nil {
            throw invalid("a VLAN protocol needs a VLAN: give --vlan N with --vlan-proto \(p.rawValue)")
        }
        if let vlan, vlan == 0, let p = vlanProtocol, p == .dot1AD {
            throw invalid("VLAN 0 removes the port VLAN; --vlan-proto 802.1ad needs a VLAN id of 1–4095")
        }
        if let min = minTxRate, let max = maxTxRate, max != 0, min > max {
            throw invalid("minimum tx rate \(min) Mbps is above the maximum \(max) Mbps (0 means no limit)")
        }
    }

    /// The settings split into the groups the kernel applies as one VF attribute each, in the order
    /// the kernel's `do_setvfinfo` applies them: mac, vlan (with qos and protocol), rates, spoofchk,
    /// link state, trust. Passage sends one RTM_SETLINK per group, so a driver's EOPNOTSUPP names the
    /// setting it refused and the settings before it are known to be applied.
    public var groups: [VFLinkSettings] {
        var out: [VFLinkSettings] = []
        if let mac { out.append(VFLinkSettings(mac: mac)) }
        if let vlan { out.append(VFLinkSettings(vlan: vlan, qos: qos, vlanProtocol: vlanProtocol)) }
        if minTxRate != nil || maxTxRate != nil { out.append(VFLinkSettings(minTxRate: minTxRate, maxTxRate: maxTxRate)) }
        if let spoofCheck { out.append(VFLinkSettings(spoofCheck: spoofCheck)) }
        if let linkState { out.append(VFLinkSettings(linkState: linkState)) }
        if let trust { out.append(VFLinkSettings(trust: trust)) }
        return out
    }

    /// In words, as `--dry-run` prints it: `mac 02:00:00:00:00:03, vlan 100 qos 2 802.1Q, spoofchk off`.
    public var summary: String {
        var parts: [String] = []
        if let mac { parts.append("mac \(mac)") }
        if let vlan {
            parts.append("vlan \(vlan) qos \(qos ?? 0) \((vlanProtocol ?? .dot1Q).rawValue)")
        }
        if minTxRate != nil || maxTxRate != nil {
            parts.append("min_tx_rate \(minTxRate.map { "\($0) Mbps" } ?? "unchanged") max_tx_rate \(maxTxRate.map { "\($0) Mbps" } ?? "unchanged")")
        }
        if let spoofCheck { parts.append("spoofchk \(spoofCheck ? "on" : "off")") }
        if let linkState { parts.append("link-state \(linkState.rawValue)") }
        if let trust { parts.append("trust \(trust ? "on" : "off")") }
        return parts.joined(separator: ", ")
    }

    /// The setting's name for an error message (`mac`, `vlan`, `tx rate`, …), for single-group settings.
    var settingName: String {
        if mac != nil { return "the MAC address" }
        if vlan != nil { return vlanProtocol == nil ? "a VLAN" : "a VLAN with protocol \(vlanProtocol!.rawValue)" }
        if minTxRate != nil || maxTxRate != nil { return "tx rates" }
        if spoofCheck != nil { return "spoof checking" }
        if linkState != nil { return "the link state" }
        if trust != nil { return "trust" }
        return "settings"
    }
}
