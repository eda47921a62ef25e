import CNetlink
import Foundation
import Testing
@testable import SRIOV

/// VF link settings: strict parsing and validation, and the rtnetlink messages — built with the
/// encoder, then taken apart again with libnl's own parser (`nlmsg_parse`, `nla_parse_nested`).
/// No kernel needed.
@Suite struct VFLinkSettingsTests {
    @Test func macParsesStrictly() throws {
        #expect(try MACAddress(parsing: "02:00:00:00:00:03").bytes == [2, 0, 0, 0, 0, 3])
        #expect(try MACAddress(parsing: "AA:bb:Cc:dd:EE:ff").description == "aa:bb:cc:dd:ee:ff")
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:03:04", "2:00:00:00:00:03", "02-00-00-00-00-03",
                    "0200.0000.0003", "02:00:00:00:00:0g", " 02:00:00:00:00:03", "02:00:00:00:00:03\n", "02::00:00:00:00:03",
                    "+2:00:00:00:00:03", "002:00:00:00:00:03"] {
            #expect(throws: SRIOVError.self, "\(bad.debugDescription)") { try MACAddress(parsing: bad) }
        }
    }

    @Test func protocolsAndLinkStates() throws {
        #expect(try VLANProtocol(parsing: "802.1Q") == .dot1Q)
        #expect(try VLANProtocol(parsing: "802.1AD") == .dot1AD)
        #expect(throws: SRIOVError.self) { try VLANProtocol(parsing: "8021q") }
        #expect(VLANProtocol(ethertype: 0x88A8) == .dot1AD && VLANProtocol(ethertype: 0x0800) == nil)
        #expect(try VFLinkState(parsing: "Disable") == .disable)
        #expect(throws: SRIOVError.self) { try VFLinkState(parsing: "up") }
        #expect(VFLinkState.allCases.map(\.kernelValue) == [0, 1, 2])
    }

    func invalid(_ s: VFLinkSettings) -> String? {
        do { try s.validate(); return nil } catch {
            #expect(error.code == .invalidArgument)
            return error.message
        }
    }

    @Test func validation() throws {
        #expect(invalid(VFLinkSettings())?.contains("nothing to set") == true)
        #expect(invalid(VFLinkSettings(vlan: 4096))?.contains("0–4095") == true)
        #expect(invalid(VFLinkSettings(vlan: -1))?.contains("0–4095") == true)
        #expect(invalid(VFLinkSettings(vlan: 10, qos: 8))?.contains("0–7") == true)
        #expect(invalid(VFLinkSettings(qos: 2))?.contains("--vlan") == true)
        #expect(invalid(VFLinkSettings(vlanProtocol: .dot1AD))?.contains("--vlan") == true)
        #expect(invalid(VFLinkSettings(vlan: 0, vlanProtocol: .dot1AD)) != nil)
        #expect(invalid(VFLinkSettings(mac: try MACAddress(parsing: "01:00:5e:00:00:01")))?.contains("multicast") == true)
        #expect(invalid(VFLinkSettings(minTxRate: 200, maxTxRate: 100))?.contains("above") == true)
        #expect(invalid(VFLinkSettings(minTxRate: 200, maxTxRate: 0)) == nil)  // 0 = no limit
        #expect(invalid(VFLinkSettings(mac: try MACAddress(parsing: "00:00:00:00:00:00"))) == nil)
        #expect(invalid(VFLinkSettings(vlan: 4095, qos: 7, vlanProtocol: .dot1Q, trust: false, spoofCheck: true,
                                       linkState: .auto, minTxRate: 0, maxTxRate: 10000)) == nil)
    }

    @Test func groupsAndSummary() throws {
        let s = VFLinkSettings(mac: try MACAddress(parsing: "02:00:00:00:00:03"), vlan: 100, qos: 2, trust: true,
                               spoofCheck: false, linkState: .enable, maxTxRate: 500)
        #expect(s.groups.map(\.summary) == [
            "mac 02:00:00:00:00:03", "vlan 100 qos 2 802.1Q", "min_tx_rate unchanged max_tx_rate 500 Mbps",
            "spoofchk off", "link-state enable", "trust on",
        ])
        #expect(s.summary == "mac 02:00:00:00:00:03, vlan 100 qos 2 802.1Q, min_tx_rate unchanged max_tx_rate 500 Mbps, spoofchk off, link-state enable, trust on")
        #expect(s.groups.map(\.settingName) == ["the MAC address", "a VLAN", "tx rates", "spoof checking", "the link state", "trust"])
    }

    @Test func readbackMismatches() throws {
        let set = VFLinkSettings(mac: try MACAddress(parsing: "02:00:00:00:00:03"), vlan: 100, trust: true, maxTxRate: 500)
        var got = VFLinkInfo(index: 3, mac: "02:00:00:00:00:03", vlan: 100, qos: 0, vlanProtocol: .dot1Q,
                             spoofCheck: nil, trust: true, linkState: .auto, minTxRate: 0, maxTxRate: 500)
        #expect(got.mismatches(with: set).isEmpty)
        got.vlan = 0
        got.trust = nil  // not reported: not compared
        got.maxTxRate = 400
        #expect(got.mismatches(with: set) == ["vlan: set 100, reads 0", "max tx rate: set 500 Mbps, reads 400 Mbps"])
    }
}

@Suite struct VFLinkEncodingTests {
    /// Parses a built message's top level with libnl; calls `body` with the table.
    func parseTop(_ msg: borrowing NetlinkMessage, _ body: (nlmsghdr, ifinfomsg, AttributeTable) throws -> Void) throws {
        let hdr = msg.header
        let tb = AttributeTable(max: Int(PASSAGE_IFLA_MAX))
        defer { tb.deallocate() }
        let r = nlmsg_parse(hdr, Int32(MemoryLayout<ifinfomsg>.size), tb.slots, Int32(PASSAGE_IFLA_MAX), nil)
        #expect(r == 0, "nlmsg_parse: \(r)")
        let ifi = UnsafeRawPointer(nlmsg_data(hdr)!).loadUnaligned(as: ifinfomsg.self)
        try body(hdr.pointee, ifi, tb)
    }

    /// Every `IFLA_VF_INFO` in `IFLA_VFINFO_LIST`, each parsed with `nla_parse_nested`.
    func vfInfos(_ tb: AttributeTable) throws -> [AttributeTable] {
        let list = try #require(tb[Int(IFLA_VFINFO_LIST)])
        var out: [AttributeTable] = []
        var remaining = nla_len(list)
        var a: UnsafeMutablePointer<nlattr>? = nla_data(list)?.assumingMemoryBound(to: nlattr.self)
        while let attr = a, nla_ok(attr, remaining) != 0 {
            #expect(nla_type(attr) == Int32(IFLA_VF_INFO))
            let vf = AttributeTable(max: Int(PASSAGE_IFLA_VF_MAX))
            #expect(nla_parse_nested(vf.slots, Int32(PASSAGE_IFLA_VF_MAX), attr, nil) == 0)
            out.append(vf)
            a = nla_next(attr, &remaining)
        }
        #expect(remaining == 0, "trailing bytes in IFLA_VFINFO_LIST")
        return out
    }

    /// The attribute types present in a table.
    func present(_ t: AttributeTable) -> Set<Int> {
        Set((0...t.max).filter { t.slots[$0] != nil })
    }

    @Test func setLinkCarriesEverySetting() throws {
        let s = VFLinkSettings(mac: try MACAddress(parsing: "02:00:00:00:00:03"), vlan: 100, qos: 2, trust: true,
                               spoofCheck: false, linkState: .disable, minTxRate: 10, maxTxRate: 500)
        let msg = try VFLinkMessage.setVF(index: 7, vf: 3, s)
        try parseTop(msg) { hdr, ifi, tb in
            #expect(hdr.nlmsg_type == UInt16(RTM_SETLINK))
            #expect(Int32(hdr.nlmsg_flags) == NLM_F_REQUEST | NLM_F_ACK)
            #expect(Int(hdr.nlmsg_len) == msg.bytes.count)
            #expect(ifi.ifi_index == 7 && ifi.ifi_family == UInt8(AF_UNSPEC) && ifi.ifi_change == 0 && ifi.ifi_flags == 0)
            #expect(present(tb) == [Int(IFLA_VFINFO_LIST)], "only the VF list at the top level")
            let infos = try vfInfos(tb)
            #expect(infos.count == 1)
            let vf = try #require(infos.first)
            defer { vf.deallocate() }
            #expect(present(vf) == [Int(IFLA_VF_MAC), Int(IFLA_VF_VLAN), Int(IFLA_VF_RATE), Int(IFLA_VF_SPOOFCHK),
                                    Int(IFLA_VF_LINK_STATE), Int(IFLA_VF_TRUST)])
            let mac = try #require(vf.payload(Int(IFLA_VF_MAC), as: ifla_vf_mac.self))
            var m = mac.mac
            #expect(mac.vf == 3)
            #expect(withUnsafeBytes(of: &m) { Array($0) } == [2, 0, 0, 0, 0, 3] + [UInt8](repeating: 0, count: 26))
            #expect(nla_len(vf[Int(IFLA_VF_MAC)]!) == 36)
            let vlan = try #require(vf.payload(Int(IFLA_VF_VLAN), as: ifla_vf_vlan.self))
            #expect(vlan.vf == 3 && vlan.vlan == 100 && vlan.qos == 2)
            let rate = try #require(vf.payload(Int(IFLA_VF_RATE), as: ifla_vf_rate.self))
            #expect(rate.vf == 3 && rate.min_tx_rate == 10 && rate.max_tx_rate == 500)
            let spoof = try #require(vf.payload(Int(IFLA_VF_SPOOFCHK), as: ifla_vf_spoofchk.self))
            #expect(spoof.vf == 3 && spoof.setting == 0)
            let state = try #require(vf.payload(Int(IFLA_VF_LINK_STATE), as: ifla_vf_link_state.self))
            #expect(state.vf == 3 && state.link_state == UInt32(IFLA_VF_LINK_STATE_DISABLE))
            let trust = try #require(vf.payload(Int(IFLA_VF_TRUST), as: ifla_vf_trust.self))
            #expect(trust.vf == 3 && trust.setting == 1)
        }
    }

    @Test func vlanWithProtocolUsesTheVLANList() throws {
        for proto in VLANProtocol.allCases {
            let msg = try VFLinkMessage.setVF(index: 2, vf: 63, VFLinkSettings(vlan: 4095, qos: 7, vlanProtocol: proto))
            try parseTop(msg) { _, ifi, tb in
                #expect(ifi.ifi_index == 2)
                let vf = try #require(try vfInfos(tb).first)
                defer { vf.deallocate() }
                #expect(present(vf) == [Int(IFLA_VF_VLAN_LIST)], "no plain IFLA_VF_VLAN when a protocol is given")
                let inner = AttributeTable(max: Int(PASSAGE_IFLA_VF_VLAN_INFO_MAX))
                defer { inner.deallocate() }
                #expect(nla_parse_nested(inner.slots, Int32(PASSAGE_IFLA_VF_VLAN_INFO_MAX), vf[Int(IFLA_VF_VLAN_LIST)]!, nil) == 0)
                #expect(present(inner) == [Int(IFLA_VF_VLAN_INFO)])
                let v = try #require(inner.payload(Int(IFLA_VF_VLAN_INFO), as: ifla_vf_vlan_info.self))
                #expect(v.vf == 63 && v.vlan == 4095 && v.qos == 7)
                // On the wire the protocol is big-endian: 0x81 0x00 / 0x88 0xa8.
                var raw = v
                let bytes = withUnsafeBytes(of: &raw) { Array($0[12..<14]) }
                #expect(bytes == [UInt8(proto.ethertype >> 8), UInt8(proto.ethertype & 0xff)])
                #expect(UInt16(bigEndian: v.vlan_proto) == UInt16(proto == .dot1Q ? PASSAGE_ETH_P_8021Q : PASSAGE_ETH_P_8021AD))
            }
        }
    }

    @Test func onlyWhatIsSetIsSent() throws {
        let cases: [(VFLinkSettings, Int)] = [
            (VFLinkSettings(trust: false), Int(IFLA_VF_TRUST)),
            (VFLinkSettings(spoofCheck: true), Int(IFLA_VF_SPOOFCHK)),
            (VFLinkSettings(linkState: .auto), Int(IFLA_VF_LINK_STATE)),
            (VFLinkSettings(maxTxRate: 100), Int(IFLA_VF_RATE)),
            (VFLinkSettings(vlan: 0), Int(IFLA_VF_VLAN)),
        ]
        for (s, attr) in cases {
            let msg = try VFLinkMessage.setVF(index: 1, vf: 0, s)
            try parseTop(msg) { _, _, tb in
                let vf = try #require(try vfInfos(tb).first)
                defer { vf.deallocate() }
                #expect(present(vf) == [attr], "\(s.summary)")
            }
        }
    }

    @Test func getLinkAsksForVFInfo() throws {
        let msg = try VFLinkMessage.getLink(name: "eth0")
        try parseTop(msg) { hdr, ifi, tb in
            #expect(hdr.nlmsg_type == UInt16(RTM_GETLINK) && Int32(hdr.nlmsg_flags) == NLM_F_REQUEST)
            #expect(ifi.ifi_index == 0)
            #expect(present(tb) == [Int(IFLA_IFNAME), Int(IFLA_EXT_MASK)])
            #expect(String(cString: nla_get_string(tb[Int(IFLA_IFNAME)]!)) == "eth0")
            #expect(nla_get_u32(tb[Int(IFLA_EXT_MASK)]!) == UInt32(PASSAGE_RTEXT_FILTER_VF | PASSAGE_RTEXT_FILTER_SKIP_STATS))
        }
    }

    /// A reply as the kernel builds it (rtnl_fill_vfinfo), built here with libnl, read by the parser.
    @Test func parsesANewLinkReply() throws {
        guard let msg = NetlinkMessage(type: Int32(RTM_NEWLINK), flags: 0) else { Issue.record("nlmsg_alloc_simple"); return }
        var ifi = ifinfomsg()
        ifi.ifi_index = 9
        let raw = msg.raw
        #expect(nlmsg_append(raw, &ifi, MemoryLayout<ifinfomsg>.size, Int32(NLMSG_ALIGNTO)) == 0)
        #expect(nla_put_string(raw, Int32(IFLA_IFNAME), "ens1f0") == 0)
        #expect(nla_put_u32(raw, Int32(IFLA_NUM_VF), 2) == 0)
        let list = try #require(nla_nest_start(raw, Int32(IFLA_VFINFO_LIST)))
        func put<T: BitwiseCopyable>(_ type: Int, _ v: T) {
            let r = withUnsafeBytes(of: v) { nla_put(raw, Int32(type), Int32($0.count), $0.baseAddress) }
            #expect(r == 0)
        }
        for vf: UInt32 in 0..<2 {
            let info = try #require(nla_nest_start(raw, Int32(IFLA_VF_INFO)))
            var mac = ifla_vf_mac()
            mac.vf = vf
            withUnsafeMutableBytes(of: &mac.mac) { b in for (i, x) in [0x02, 0, 0, 0, 0, 0x10 + UInt8(vf)].enumerated() { b[i] = x } }
            put(Int(IFLA_VF_MAC), mac)
            put(Int(IFLA_VF_VLAN), ifla_vf_vlan(vf: vf, vlan: vf == 0 ? 0 : 100, qos: vf == 0 ? 0 : 5))
            let vl = try #require(nla_nest_start(raw, Int32(IFLA_VF_VLAN_LIST)))
            put(Int(IFLA_VF_VLAN_INFO), ifla_vf_vlan_info(vf: vf, vlan: vf == 0 ? 0 : 100, qos: vf == 0 ? 0 : 5,
                                                          vlan_proto: UInt16(vf == 0 ? 0x8100 : 0x88A8).bigEndian))
            nla_nest_end(raw, vl)
            put(Int(IFLA_VF_TX_RATE), ifla_vf_tx_rate(vf: vf, rate: 300))
            put(Int(IFLA_VF_RATE), ifla_vf_rate(vf: vf, min_tx_rate: 0, max_tx_rate: 300))
            put(Int(IFLA_VF_SPOOFCHK), ifla_vf_spoofchk(vf: vf, setting: vf == 0 ? 1 : UInt32.max))  // -1: not reported
            put(Int(IFLA_VF_LINK_STATE), ifla_vf_link_state(vf: vf, link_state: vf == 0 ? 0 : 2))
            put(Int(IFLA_VF_RSS_QUERY_EN), ifla_vf_rss_query_en(vf: vf, setting: 0))
            put(Int(IFLA_VF_TRUST), ifla_vf_trust(vf: vf, setting: vf))
            nla_nest_end(raw, info)
        }
        nla_nest_end(raw, list)

        let link = try VFLinkMessage.parseLink(msg.bytes)
        #expect(link.index == 9 && link.name == "ens1f0" && link.numVFs == 2 && link.kind == nil)
        #expect(link.vfs == [
            VFLinkInfo(index: 0, mac: "02:00:00:00:00:10", vlan: 0, qos: 0, vlanProtocol: .dot1Q, spoofCheck: true,
                       trust: false, linkState: .auto, minTxRate: 0, maxTxRate: 300),
            VFLinkInfo(index: 1, mac: "02:00:00:00:00:11", vlan: 100, qos: 5, vlanProtocol: .dot1AD, spoofCheck: nil,
                       trust: true, linkState: .disable, minTxRate: 0, maxTxRate: 300),
        ])
    }

    @Test func rejectsAReplyThatIsNotNewLink() throws {
        let msg = try VFLinkMessage.getLink(name: "eth0")
        #expect(throws: SRIOVError.self) { try VFLinkMessage.parseLink(msg.bytes) }
        #expect(throws: SRIOVError.self) { try VFLinkMessage.parseLink([1, 2, 3]) }
    }
}
