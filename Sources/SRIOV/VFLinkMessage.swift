import CNetlink

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Builds the rtnetlink requests for VF link settings and reads the kernel's replies, with libnl's
/// message and attribute functions. No socket here: tests build and parse messages without a kernel.
enum VFLinkMessage {
    /// RTM_GETLINK for one interface, by index or (index 0) by name, asking for VF information
    /// (`IFLA_EXT_MASK = RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS`).
    static func getLink(index: Int32 = 0, name: String? = nil) throws(SRIOVError) -> NetlinkMessage {
        guard let msg = NetlinkMessage(type: Int32(RTM_GETLINK), flags: NLM_F_REQUEST) else { throw noMemory() }
        var ifi = ifinfomsg()
        ifi.ifi_family = UInt8(AF_UNSPEC)
        ifi.ifi_index = index
        try check(nlmsg_append(msg.raw, &ifi, MemoryLayout<ifinfomsg>.size, Int32(NLMSG_ALIGNTO)), "ifinfomsg")
        if let name {
            try check(nla_put_string(msg.raw, Int32(IFLA_IFNAME), name), "IFLA_IFNAME")
        }
        try check(nla_put_u32(msg.raw, Int32(IFLA_EXT_MASK),
                              UInt32(PASSAGE_RTEXT_FILTER_VF | PASSAGE_RTEXT_FILTER_SKIP_STATS)), "IFLA_EXT_MASK")
        return msg
    }

    /// RTM_SETLINK (with NLM_F_ACK) on interface `index` carrying
    /// `IFLA_VFINFO_LIST { IFLA_VF_INFO { … } }` with one attribute per setting given:
    /// IFLA_VF_MAC, IFLA_VF_VLAN (or IFLA_VF_VLAN_LIST { IFLA_VF_VLAN_INFO } when a protocol is given),
    /// IFLA_VF_RATE (min and max both; a nil one is sent as 0), IFLA_VF_SPOOFCHK, IFLA_VF_LINK_STATE, IFLA_VF_TRUST.
    static func setVF(index: Int32, vf: UInt32, _ s: VFLinkSettings) throws(SRIOVError) -> NetlinkMessage {
        guard let msg = NetlinkMessage(type: Int32(RTM_SETLINK), flags: NLM_F_REQUEST | NLM_F_ACK) else { throw noMemory() }
        var ifi = ifinfomsg()
        ifi.ifi_family = UInt8(AF_UNSPEC)
        ifi.ifi_index = index
        try check(nlmsg_append(msg.raw, &ifi, MemoryLayout<ifinfomsg>.size, Int32(NLMSG_ALIGNTO)), "ifinfomsg")
        guard let list = nla_nest_start(msg.raw, Int32(IFLA_VFINFO_LIST)) else { throw noSpace("IFLA_VFINFO_LIST") }
        guard let info = nla_nest_start(msg.raw, Int32(IFLA_VF_INFO)) else { throw noSpace("IFLA_VF_INFO") }

        if let mac = s.mac {
            var v = ifla_vf_mac()
            v.vf = vf
            withUnsafeMutableBytes(of: &v.mac) { buf in
                for (i, b) in mac.bytes.enumerated() { buf[i] = b }
            }
            try put(msg, IFLA_VF_MAC, &v, "IFLA_VF_MAC")
        }
        if let vlan = s.vlan {
            if let proto = s.vlanProtocol {
                guard let vl = nla_nest_start(msg.raw, Int32(IFLA_VF_VLAN_LIST)) else { throw noSpace("IFLA_VF_VLAN_LIST") }
                var v = ifla_vf_vlan_info(vf: vf, vlan: UInt32(vlan), qos: UInt32(s.qos ?? 0), vlan_proto: proto.ethertype.bigEndian)
                try put(msg, IFLA_VF_VLAN_INFO, &v, "IFLA_VF_VLAN_INFO")
                try check(nla_nest_end(msg.raw, vl), "IFLA_VF_VLAN_LIST")
            } else {
                var v = ifla_vf_vlan(vf: vf, vlan: UInt32(vlan), qos: UInt32(s.qos ?? 0))
                try put(msg, IFLA_VF_VLAN, &v, "IFLA_VF_VLAN")
            }
        }
        if s.minTxRate != nil || s.maxTxRate != nil {
            var v = ifla_vf_rate(vf: vf, min_tx_rate: s.minTxRate ?? 0, max_tx_rate: s.maxTxRate ?? 0)
            try put(msg, IFLA_VF_RATE, &v, "IFLA_VF_RATE")
        }
        if let on = s.spoofCheck {
            var v = ifla_vf_spoofchk(vf: vf, setting: on ? 1 : 0)
            try put(msg, IFLA_VF_SPOOFCHK, &v, "IFLA_VF_SPOOFCHK")
        }
        if let state = s.linkState {
            var v = ifla_vf_link_state(vf: vf, link_state: state.kernelValue)
            try put(msg, IFLA_VF_LINK_STATE, &v, "IFLA_VF_LINK_STATE")
        }
        if let on = s.trust {
            var v = ifla_vf_trust(vf: vf, setting: on ? 1 : 0)
            try put(msg, IFLA_VF_TRUST, &v, "IFLA_VF_TRUST")
        }
        try check(nla_nest_end(msg.raw, info), "IFLA_VF_INFO")
        try check(nla_nest_end(msg.raw, list), "IFLA_VFINFO_LIST")
        return msg
    }

    /// Reads an RTM_NEWLINK reply: index, name, `IFLA_NUM_VF` and every `IFLA_VF_INFO`.
    static func parseLink(_ bytes: [UInt8]) throws(SRIOVError) -> NetlinkLink {
        var copy = bytes
        let result: Result<NetlinkLink, SRIOVError> = copy.withUnsafeMutableBytes { buf in
            guard buf.count >= MemoryLayout<nlmsghdr>.size + MemoryLayout<ifinfomsg>.size else {
                return .failure(malformed("RTM_NEWLINK shorter than its headers"))
            }
            let hdr = buf.baseAddress!.assumingMemoryBound(to: nlmsghdr.self)
            guard hdr.pointee.nlmsg_type == UInt16(RTM_NEWLINK), Int(hdr.pointee.nlmsg_len) <= buf.count else {
                return .failure(malformed("expected RTM_NEWLINK, got message type \(hdr.pointee.nlmsg_type)"))
            }
            let ifi = UnsafeRawPointer(nlmsg_data(hdr)!).loadUnaligned(as: ifinfomsg.self)
            let tb = AttributeTable(max: Int(PASSAGE_IFLA_MAX))
            defer { tb.deallocate() }
            let r = nlmsg_parse(hdr, Int32(MemoryLayout<ifinfomsg>.size), tb.slots, Int32(PASSAGE_IFLA_MAX), nil)
            guard r >= 0 else { return .failure(malformed("nlmsg_parse: \(String(cString: nl_geterror(r)))")) }
            var link = NetlinkLink(index: ifi.ifi_index, name: "", numVFs: nil, vfs: [])
            if let a = tb[IFLA_IFNAME] { link.name = String(cString: nla_get_string(a)) }
            if let a = tb[IFLA_NUM_VF], nla_len(a) >= 4 { link.numVFs = Int(nla_get_u32(a)) }
            if let a = tb[IFLA_LINKINFO] {
                let info = AttributeTable(max: Int(PASSAGE_IFLA_INFO_MAX))
                defer { info.deallocate() }
                if nla_parse_nested(info.slots, Int32(PASSAGE_IFLA_INFO_MAX), a, nil) >= 0, let k = info[IFLA_INFO_KIND], nla_len(k) > 0 {
                    link.kind = String(cString: nla_get_string(k))
                }
            }
            if let list = tb[IFLA_VFINFO_LIST] {
                var remaining = nla_len(list)
                var a: UnsafeMutablePointer<nlattr>? = nla_data(list)?.assumingMemoryBound(to: nlattr.self)
                while let attr = a, nla_ok(attr, remaining) != 0 {
                    defer { a = nla_next(attr, &remaining) }
                    guard nla_type(attr) == Int32(IFLA_VF_INFO) else { continue }
                    switch parseVFInfo(attr) {
                    case .success(let vf): link.vfs.append(vf)
                    case .failure(let e): return .failure(e)
                    }
                }
            }
            return .success(link)
        }
        return try result.get()
    }

    /// One `IFLA_VF_INFO` nest.
    static func parseVFInfo(_ nest: UnsafeMutablePointer<nlattr>) -> Result<VFLinkInfo, SRIOVError> {
        let tb = AttributeTable(max: Int(PASSAGE_IFLA_VF_MAX))
        defer { tb.deallocate() }
        let r = nla_parse_nested(tb.slots, Int32(PASSAGE_IFLA_VF_MAX), nest, nil)
        guard r >= 0 else { return .failure(malformed("IFLA_VF_INFO: \(String(cString: nl_geterror(r)))")) }
        // Every VF attribute starts with the u32 VF index; take it from the first one present.
        var index: UInt32?
        var info = VFLinkInfo(index: -1)
        if let v = tb.payload(IFLA_VF_MAC, as: ifla_vf_mac.self) {
            index = v.vf
            var m = v.mac
            let bytes = withUnsafeBytes(of: &m) { Array($0.prefix(6)) }
            info.mac = MACAddress(bytes: bytes)?.description
        }
        if let v = tb.payload(IFLA_VF_VLAN, as: ifla_vf_vlan.self) {
            index = index ?? v.vf
            info.vlan = Int(v.vlan)
            info.qos = Int(v.qos)
        }
        if let list = tb[IFLA_VF_VLAN_LIST] {
            // The kernel reports the port VLAN again here with its protocol (one entry).
            let inner = AttributeTable(max: Int(PASSAGE_IFLA_VF_VLAN_INFO_MAX))
            defer { inner.deallocate() }
            if nla_parse_nested(inner.slots, Int32(PASSAGE_IFLA_VF_VLAN_INFO_MAX), list, nil) >= 0,
               let v = inner.payload(IFLA_VF_VLAN_INFO, as: ifla_vf_vlan_info.self) {
                index = index ?? v.vf
                info.vlan = Int(v.vlan)
                info.qos = Int(v.qos)
                info.vlanProtocol = VLANProtocol(ethertype: UInt16(bigEndian: v.vlan_proto))
            }
        }
        if let v = tb.payload(IFLA_VF_RATE, as: ifla_vf_rate.self) {
            index = index ?? v.vf
            info.minTxRate = v.min_tx_rate
            info.maxTxRate = v.max_tx_rate
        } else if let v = tb.payload(IFLA_VF_TX_RATE, as: ifla_vf_tx_rate.self) {
            index = index ?? v.vf
            info.maxTxRate = v.rate
        }
        if let v = tb.payload(IFLA_VF_SPOOFCHK, as: ifla_vf_spoofchk.self) {
            index = index ?? v.vf
            info.spoofCheck = v.setting == UInt32.max ? nil : v.setting != 0
        }
        if let v = tb.payload(IFLA_VF_LINK_STATE, as: ifla_vf_link_state.self) {
            index = index ?? v.vf
            info.linkState = VFLinkState(kernelValue: v.link_state)
        }
        if let v = tb.payload(IFLA_VF_TRUST, as: ifla_vf_trust.self) {
            index = index ?? v.vf
            info.trust = v.setting == UInt32.max ? nil : v.setting != 0
        }
        guard let index else { return .failure(malformed("IFLA_VF_INFO without a VF index")) }
        info.index = Int(index)
        return .success(info)
    }

    // MARK: helpers

    private static func put<T: BitwiseCopyable>(_ msg: borrowing NetlinkMessage, _ type: Int, _ value: inout T, _ name: String) throws(SRIOVError) {
        let r = withUnsafeBytes(of: &value) { nla_put(msg.raw, Int32(type), Int32($0.count), $0.baseAddress) }
        try check(r, name)
    }

    private static func check(_ r: Int32, _ what: String) throws(SRIOVError) {
        if r < 0 { throw noSpace(what) }
    }

    private static func noMemory() -> SRIOVError {
        SRIOVError(code: .netlink, message: "netlink: cannot allocate a message", errno: ENOMEM)
    }

    private static func noSpace(_ what: String) -> SRIOVError {
        SRIOVError(code: .netlink, message: "netlink: no room in the message for \(what)", errno: ENOBUFS)
    }

    static func malformed(_ what: String) -> SRIOVError {
        SRIOVError(code: .netlink, message: "netlink: malformed reply from the kernel: \(what)", errno: EPROTO)
    }
}

/// `struct nlattr *tb[max + 1]` for nlmsg_parse / nla_parse_nested.
struct AttributeTable {
    let slots: UnsafeMutablePointer<UnsafeMutablePointer<nlattr>?>
    let max: Int

    init(max: Int) {
        self.max = max
        slots = .allocate(capacity: max + 1)
        slots.initialize(repeating: nil, count: max + 1)
    }

    func deallocate() { slots.deallocate() }

    subscript(_ type: Int) -> UnsafeMutablePointer<nlattr>? {
        type >= 0 && type <= max ? slots[type] : nil
    }

    /// The attribute's payload as a fixed-size kernel struct, or nil when absent or too short.
    func payload<T>(_ type: Int, as: T.Type) -> T? {
        guard let a = self[type], Int(nla_len(a)) >= MemoryLayout<T>.size, let p = nla_data(a) else { return nil }
        return UnsafeRawPointer(p).loadUnaligned(as: T.self)
    }
}
