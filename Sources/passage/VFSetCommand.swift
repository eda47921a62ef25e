import ArgumentParser
import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// `passage vf set PF --vf I …`: per-VF link settings of an SR-IOV NIC, through its PF's interface.
struct VFSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Set a VF's link settings (MAC, VLAN, trust, spoof checking, link state, tx rates) through its PF.",
        discussion: """
            PF is the PF's PCI address (0000:3b:00.0) or its network interface (eth0). Each setting is one \
            rtnetlink RTM_SETLINK on the PF's interface (what `ip link set PF vf I …` sends), in the order \
            mac, vlan, rates, spoofchk, link-state, trust; the VF is read back afterwards and any difference \
            is an error. --dry-run reads the interface and prints the requests without sending them.
            """
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("The PF: PCI address (0000:3b:00.0) or network interface (eth0).", valueName: "PF"))
    var pf: String

    @Option(name: .long, help: ArgumentHelp("VF index, from 0.", valueName: "I"))
    var vf: Int

    @Option(name: .long, help: ArgumentHelp("MAC address, aa:bb:cc:dd:ee:ff.", valueName: "MAC"))
    var mac: String?

    @Option(name: .long, help: ArgumentHelp("Port VLAN id, 0–4095 (0 removes it).", valueName: "N"))
    var vlan: Int?

    @Option(name: .long, help: ArgumentHelp("802.1p priority of the port VLAN, 0–7.", valueName: "Q"))
    var qos: Int?

    @Option(name: .customLong("vlan-proto"), help: ArgumentHelp("Port VLAN protocol: 802.1Q or 802.1ad.", valueName: "PROTO"))
    var vlanProto: String?

    @Option(name: .long, help: ArgumentHelp("Trust the VF (promiscuous mode, MAC changes): on or off.", valueName: "on|off"))
    var trust: String?

    @Option(name: .long, help: ArgumentHelp("Spoof checking of the VF's source MAC and VLAN: on or off.", valueName: "on|off"))
    var spoofchk: String?

    @Option(name: .customLong("link-state"), help: ArgumentHelp("auto (follow the PF), enable or disable.", valueName: "STATE"))
    var linkState: String?

    @Option(name: .customLong("min-tx-rate"), help: ArgumentHelp("Guaranteed tx rate in Mbps (0: none).", valueName: "MBPS"))
    var minTxRate: UInt32?

    @Option(name: .customLong("max-tx-rate"), help: ArgumentHelp("Tx rate limit in Mbps (0: none).", valueName: "MBPS"))
    var maxTxRate: UInt32?

    @Flag(name: .long, help: "Print the netlink requests without sending them.")
    var dryRun = false

    func settings() throws -> VFLinkSettings {
        var s = VFLinkSettings()
        s.mac = try mac.map { try MACAddress(parsing: $0) }
        s.vlan = vlan
        s.qos = qos
        s.vlanProtocol = try vlanProto.map { try VLANProtocol(parsing: $0) }
        s.trust = try trust.map { try onOff($0, "--trust") }
        s.spoofCheck = try spoofchk.map { try onOff($0, "--spoofchk") }
        s.linkState = try linkState.map { try VFLinkState(parsing: $0) }
        s.minTxRate = minTxRate
        s.maxTxRate = maxTxRate
        try s.validate()
        return s
    }

    func run() throws {
        try reportingErrors(json: output.json) {
            let s = try settings()
            let client = VFLinkClient(root: sysfs.root)
            let interface = try resolveInterface(pf, client: client)
            let actions: [HostAction]
            var note: String?
            if dryRun {
                let plan = try client.plan(s, vf: vf, interface: interface)
                actions = plan.actions
                note = plan.problem?.message
            } else {
                actions = try client.apply(s, vf: vf, interface: interface, dryRun: false)
            }
            if output.json {
                try printJSON(VFSetResult(interface: interface, pf: client.pciAddress(ofInterface: interface)?.description,
                                          vf: vf, dryRun: dryRun, actions: actions.map(\.description), problem: note))
            } else {
                for a in actions { writeStdout((dryRun ? "would: " : "done: ") + a.description + "\n") }
                if let note { writeStderr("passage: note: without --dry-run this would fail: \(note)\n") }
            }
        }
    }
}

/// `passage vf links PF`: every VF's link settings as the PF's driver reports them.
struct VFLinks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "links",
        abstract: "Show each VF's link settings (MAC, VLAN, trust, spoof checking, link state, tx rates).",
        discussion: "Reads RTM_GETLINK with RTEXT_FILTER_VF on the PF's interface (what `ip link show PF` prints as `vf N …`)."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("The PF: PCI address (0000:3b:00.0) or network interface (eth0).", valueName: "PF"))
    var pf: String

    func run() throws {
        try reportingErrors(json: output.json) {
            let client = VFLinkClient(root: sysfs.root)
            let interface = try resolveInterface(pf, client: client)
            let link = try client.link(interface: interface)
            let address = client.pciAddress(ofInterface: link.name)
            if output.json {
                try printJSON(VFLinksResult(interface: link.name, pf: address?.description,
                                            driver: client.driver(ofInterface: link.name), numVFs: link.numVFs, vfs: link.vfs))
                return
            }
            let name = link.name + (address.map { " (PF \($0))" } ?? "")
            guard !link.vfs.isEmpty else {
                let n = link.numVFs ?? 0
                writeStdout(n == 0 ? "\(name): no VFs\n" : "\(name): \(n) VFs, but its driver reports no VF link settings\n")
                return
            }
            writeStdout("\(name): \(link.numVFs ?? link.vfs.count) VFs\n")
            writeStdout(Self.table(link.vfs).render(width: terminalWidth()))
        }
    }

    static func table(_ vfs: [VFLinkInfo]) -> Table {
        func flag(_ b: Bool?) -> String { b.map { $0 ? "on" : "off" } ?? "-" }
        func rate(_ r: UInt32?) -> String { r.map { $0 == 0 ? "none" : "\($0)" } ?? "-" }
        var t = Table(headers: ["VF", "MAC", "VLAN", "QOS", "PROTO", "SPOOFCHK", "TRUST", "LINK", "MIN-TX", "MAX-TX"])
        for v in vfs {
            t.rows.append([
                "\(v.index)", v.mac ?? "-", v.vlan.map(String.init) ?? "-", v.qos.map(String.init) ?? "-",
                v.vlanProtocol?.rawValue ?? "-", flag(v.spoofCheck), flag(v.trust), v.linkState?.rawValue ?? "-",
                rate(v.minTxRate), rate(v.maxTxRate),
            ])
        }
        return t
    }
}

/// The PF argument: a PCI address (resolved through sysfs to its interface) or an interface name.
func resolveInterface(_ text: String, client: VFLinkClient) throws -> String {
    if let address = try? PCIAddress(parsing: text) { return try client.interface(for: address) }
    if text.contains(":") { _ = try parseAddress(text) }  // looks like an address: report why it is not one
    return text
}

private func onOff(_ text: String, _ option: String) throws(CLIError) -> Bool {
    switch text.lowercased() {
    case "on": true
    case "off": false
    default: throw CLIError.usage("\(option) \(text): expected on or off")
    }
}

private func writeStderr(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
}

/// `passage vf set --json`. (Wire shape; belongs in PassageAPI once the API serves it.)
struct VFSetResult: Encodable {
    var interface: String
    var pf: String?
    var vf: Int
    var dryRun: Bool
    /// The netlink requests, as `netlink IF: VF I: …`.
    var actions: [String]
    /// With --dry-run: why a real run would fail before sending anything; null when it would not.
    var problem: String?

    enum CodingKeys: String, CodingKey { case interface, pf, vf, dryRun, actions, problem }

}

/// `passage vf links --json`. (Wire shape; belongs in PassageAPI once the API serves it.)
struct VFLinksResult: Encodable {
    var interface: String
    var pf: String?
    var driver: String?
    /// `IFLA_NUM_VF`; null when the kernel sends none (an interface with no PCI function behind it).
    var numVFs: Int?
    var vfs: [VFLinkInfo]

    enum CodingKeys: String, CodingKey { case interface, pf, driver, numVFs, vfs }

}
