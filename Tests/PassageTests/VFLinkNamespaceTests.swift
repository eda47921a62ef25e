import CNetlink
import Foundation
import Testing
@testable import SRIOV

/// A network namespace of the test's own (`ip netns add passage-test-PID-N`) holding a veth pair
/// v0/v1: real RTM_GETLINK / RTM_SETLINK against the running kernel without touching any of the
/// host's interfaces. Deleted when the suite instance goes away.
final class TestNetworkNamespace {
    let name: String
    nonisolated(unsafe) static var counter = 0

    init() throws {
        Self.counter += 1
        name = "passage-test-\(getpid())-\(Self.counter)-\(UInt32.random(in: 0...0xffff))"
        let ip = try #require(which("ip"), "iproute2's ip is needed")
        let add = try runProcess(ip, ["netns", "add", name])
        guard add.status == 0 else { throw TestSetupError("ip netns add \(name): \(add.stderr)") }
        let veth = try runProcess(ip, ["-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        guard veth.status == 0 else {
            remove()
            throw TestSetupError("ip -n \(name) link add v0 type veth: \(veth.stderr)")
        }
    }

    deinit { remove() }

    func remove() {
        if let ip = which("ip") { _ = try? runProcess(ip, ["netns", "delete", name]) }
    }

    /// Runs `body` on a new thread that has entered this namespace (setns affects that thread only);
    /// netlink sockets `body` opens talk to the namespace. Never runs `body` if entering fails.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        nonisolated(unsafe) var result: Result<T, any Error> = .failure(TestSetupError("namespace thread did not run"))
        let done = DispatchSemaphore(value: 0)
        let path = "/var/run/netns/\(name)"
        let thread = Thread {
            defer { done.signal() }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { result = .failure(TestSetupError("open \(path): errno \(errno)")); return }
            defer { close(fd) }
            let r = passage_netns_enter(fd)
            guard r == 0 else { result = .failure(TestSetupError("setns \(path): errno \(-r)")); return }
            result = Result { try body() }
        }
        thread.start()
        done.wait()
        return try result.get()
    }

    /// `ip netns exec NAME program args…`
    func exec(_ program: String, _ args: [String]) throws -> ProcessResult {
        try runProcess(try #require(which("ip")), ["netns", "exec", name, program] + args)
    }
}

private let canUseNamespaces = geteuid() == 0 && which("ip") != nil

/// Real kernel, in a namespace of the test's own: reading VF info from an interface with no VFs,
/// the clear error for setting VF options there, and the driver's EOPNOTSUPP mapped to a message.
@Suite(.serialized, .enabled(if: canUseNamespaces, "needs root and iproute2 to create a network namespace"))
final class VFLinkNamespaceTests {
    let ns: TestNetworkNamespace

    init() throws { ns = try TestNetworkNamespace() }
    deinit { ns.remove() }

    @Test func readsALinkWithNoVFs() throws {
        let link = try ns.run { try VFLinkClient().link(interface: "v0") }
        #expect(link.name == "v0" && link.index > 0)
        #expect(link.kind == "veth", "answered by the namespace, not the host")
        #expect(link.numVFs == nil, "veth has no parent device, so the kernel sends no IFLA_NUM_VF")
        #expect(link.vfs.isEmpty)
        #expect(try ns.run { try VFLinkClient().vfs(interface: "lo") }.isEmpty)
    }

    @Test func missingInterface() throws {
        let e = try ns.run { () -> SRIOVError? in
            do throws(SRIOVError) { _ = try VFLinkClient().vfs(interface: "eth9"); return nil } catch { return error }
        }
        #expect(e?.code == .noNetDevice)
        #expect(e?.message.contains("no network interface named eth9") == true)
    }

    @Test func settingOnAnInterfaceWithNoVFsFailsClearly() throws {
        let settings = VFLinkSettings(mac: try MACAddress(parsing: "02:00:00:00:00:03"))
        let e = try ns.run { () -> SRIOVError? in
            do throws(SRIOVError) { try VFLinkClient().apply(settings, vf: 0, interface: "v0", dryRun: false); return nil } catch { return error }
        }
        #expect(e?.code == .noVFs)
        #expect(e?.message.hasPrefix("interface v0 has no VFs") == true, "\(String(describing: e))")
        // A dry run reads, plans, and reports the problem instead of throwing.
        let plan = try ns.run { try VFLinkClient().plan(settings, vf: 0, interface: "v0") }
        #expect(plan.actions.map(\.description) == ["netlink v0: VF 0: mac 02:00:00:00:00:03"])
        #expect(plan.problem?.code == .noVFs)
        let actions = try ns.run { try VFLinkClient().apply(settings, vf: 0, interface: "v0", dryRun: true) }
        #expect(actions == plan.actions)
    }

    /// Sends RTM_SETLINK past the VF check: the kernel answers EOPNOTSUPP (veth has no ndo_set_vf_*),
    /// which is reported as the driver not supporting that setting.
    @Test func driverRefusalIsNamed() throws {
        let cases: [(VFLinkSettings, String)] = [
            (VFLinkSettings(mac: try MACAddress(parsing: "02:00:00:00:00:03")), "the MAC address"),
            (VFLinkSettings(vlan: 100, qos: 2), "a VLAN"),
            (VFLinkSettings(vlan: 100, vlanProtocol: .dot1AD), "a VLAN with protocol 802.1ad"),
            (VFLinkSettings(trust: true), "trust"),
            (VFLinkSettings(spoofCheck: false), "spoof checking"),
            (VFLinkSettings(linkState: .disable), "the link state"),
            (VFLinkSettings(minTxRate: 0, maxTxRate: 100), "tx rates"),
        ]
        for (settings, name) in cases {
            let e = try ns.run { () -> SRIOVError? in
                let client = VFLinkClient()
                let sock = try NetlinkSocket()
                let link = try client.link(interface: "v0", on: sock)
                do throws(SRIOVError) { try client.send(settings, vf: 0, link: link, on: sock); return nil } catch { return error }
            }
            #expect(e?.code == .notSupported, "\(settings.summary): \(String(describing: e))")
            #expect(e?.errno == EOPNOTSUPP)
            #expect(e?.message.hasPrefix("driver veth does not support setting \(name) on VFs (v0, VF 0)") == true,
                    "\(String(describing: e))")
        }
        // And nothing changed: v0 still reads the same.
        #expect(try ns.run { try VFLinkClient().link(interface: "v0") }.vfs.isEmpty)
    }

    // The CLI, as a user runs it inside the namespace: `ip netns exec NS passage vf …`.

    @Test func cliLinksAndSet() throws {
        let passage = try passageBinary()
        let links = try ns.exec(passage, ["vf", "links", "v0"])
        #expect(links.status == 0, "\(links.stderr)")
        #expect(links.text == "v0: no VFs\n")

        let json = try ns.exec(passage, ["vf", "links", "v0", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any])
        #expect(obj["interface"] as? String == "v0" && obj["numVFs"] is NSNull, "veth: no IFLA_NUM_VF")
        #expect(obj["pf"] is NSNull && (obj["vfs"] as? [Any])?.isEmpty == true)

        let set = try ns.exec(passage, ["vf", "set", "v0", "--vf", "0", "--mac", "02:00:00:00:00:03"])
        #expect(set.status == 1)
        #expect(set.stderr.contains("interface v0 has no VFs"), "\(set.stderr)")

        let setJSON = try ns.exec(passage, ["vf", "set", "v0", "--vf", "0", "--trust", "on", "--json"])
        #expect(setJSON.status == 1)
        let err = try #require(try JSONSerialization.jsonObject(with: Data(setJSON.stderr.utf8)) as? [String: [String: String]])
        #expect(err["error"]?["code"] == "no-vfs")

        let dry = try ns.exec(passage, ["vf", "set", "v0", "--vf", "0", "--mac", "02:00:00:00:00:03", "--vlan", "100",
                                        "--qos", "2", "--vlan-proto", "802.1ad", "--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.text == "would: netlink v0: VF 0: mac 02:00:00:00:00:03\nwould: netlink v0: VF 0: vlan 100 qos 2 802.1ad\n")
        #expect(dry.stderr.contains("without --dry-run this would fail: interface v0 has no VFs"))

        let missing = try ns.exec(passage, ["vf", "links", "eth9"])
        #expect(missing.status == 1 && missing.stderr.contains("no network interface named eth9"))
        let usage = try ns.exec(passage, ["vf", "set", "v0", "--vf", "0", "--vlan", "5000"])
        #expect(usage.status == 64 && usage.stderr.contains("0–4095"))
        let badMAC = try ns.exec(passage, ["vf", "set", "v0", "--vf", "0", "--mac", "02:00:00:00:00"])
        #expect(badMAC.status == 64 && badMAC.stderr.contains("invalid MAC address"))
    }
}
