import ArgumentParser
import Foundation
import PassageAPI

/// A device selector on the command line (claims and pools).
struct SelectorOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Selector: vendor id, 4 hex digits.", valueName: "ID")) var vendor: String?
    @Option(name: .long, help: ArgumentHelp("Selector: device id, 4 hex digits.", valueName: "ID")) var device: String?
    @Option(name: .long, help: ArgumentHelp("Selector: class code prefix (02, 0108).", valueName: "HEX")) var `class`: String?
    @Option(name: .long, help: ArgumentHelp("Selector: VFs of this PF.", valueName: "PF")) var pf: String?
    @Option(name: .long, help: ArgumentHelp("Selector: NUMA node.", valueName: "N")) var numa: Int?
    @Option(name: .long, help: ArgumentHelp("Selector: current driver ('none' for unbound).", valueName: "NAME")) var driver: String?

    var selector: DeviceSelector {
        DeviceSelector(vendorId: vendor, deviceId: device, classCode: `class`, pf: pf, numaNode: numa, driver: driver)
    }
}

struct Claim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "claim",
        abstract: "Claim devices from passaged: whole IOMMU groups, bound to vfio-pci, recorded with their owner.",
        discussion: """
            Name devices by address, or give a selector (--vendor, --device, --class, --pf, --numa, --driver, --pool) \
            and --count. The claim takes every function of each device's IOMMU group. --idempotency-key makes a retry \
            return the same claim instead of a second one.
            """
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("PCI addresses to claim.", valueName: "ADDRESS"))
    var addresses: [String] = []

    @Option(name: .long, help: "Who the devices are for (a VM name, a pod).")
    var owner: String

    @OptionGroup var select: SelectorOptions
    @Option(name: .long, help: ArgumentHelp("Selector: a pool (passage pools).", valueName: "NAME")) var pool: String?
    @Option(name: .long, help: "How many devices a selector claim takes.") var count: Int?
    @Option(name: .long, help: ArgumentHelp("Retry-safe key: the same key returns the same claim.", valueName: "KEY")) var idempotencyKey: String?

    func run() throws {
        try reportingErrors(json: output.json) {
            var selector = select.selector
            selector.pool = pool
            let hasSelector = selector != DeviceSelector()
            guard addresses.isEmpty != !hasSelector else {
                throw CLIError.usage(addresses.isEmpty ? "name devices by address, or give a selector (--vendor, --class, …) with --count"
                                                       : "give either addresses or a selector, not both")
            }
            let request = ClaimRequest(owner: owner, devices: addresses.isEmpty ? nil : addresses,
                                       selector: hasSelector ? selector : nil, count: hasSelector ? (count ?? 1) : count,
                                       idempotencyKey: idempotencyKey)
            let claim = try daemon.client.send("POST", "/v1/claims", body: request, as: ClaimInfo.self)
            if output.json { try printJSON(claim); return }
            writeStdout(describe(claim))
        }
    }
}

func describe(_ c: ClaimInfo) -> String {
    var out = "claim \(c.id) for \(c.owner): \(c.state)\n"
    for m in c.members {
        out += "  \(m.address)  group \(m.iommuGroup)  was on \(m.previousDriver ?? "no driver")" + (m.requested ? "" : "  (shares the group)") + "\n"
    }
    if let e = c.error { out += "  error: \(e)\n" }
    return out
}

struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Release a claim: its devices go back to the drivers they had."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("The claim's id.", valueName: "CLAIM"))
    var id: String

    func run() throws {
        try reportingErrors(json: output.json) {
            guard id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }), !id.isEmpty, id.count <= 64 else {
                throw CLIError.usage("claim ids look like c-0123456789ab")
            }
            let claim = try daemon.client.delete("/v1/claims/\(id)", as: ClaimInfo.self)
            if output.json { try printJSON(claim); return }
            writeStdout(describe(claim))
        }
    }
}

struct Claims: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "claims", abstract: "List claims.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Option(name: .long, help: ArgumentHelp("Only these states (comma-separated): active, released, failed, lost, …", valueName: "STATES"))
    var state: String?

    func run() throws {
        try reportingErrors(json: output.json) {
            let list = try daemon.client.get("/v1/claims" + (state.map { "?state=\($0)" } ?? ""), as: [ClaimInfo].self)
            if output.json { try printJSON(list); return }
            var t = Table(headers: ["CLAIM", "OWNER", "STATE", "GROUPS", "DEVICES"])
            for c in list { t.rows.append([c.id, c.owner, c.state, c.groups.map(String.init).joined(separator: ","), c.devices.joined(separator: " ")]) }
            writeStdout(t.render(width: terminalWidth()))
        }
    }
}

struct Pools: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pools",
        abstract: "Device pools: named selectors that claims can draw from (--pool).",
        subcommands: [PoolsList.self, PoolsDefine.self, PoolsDelete.self],
        defaultSubcommand: PoolsList.self
    )
}

struct PoolsList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List pools with their members and how many are free.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    func run() throws {
        try reportingErrors(json: output.json) {
            let pools = try daemon.client.get("/v1/pools", as: [PoolInfo].self)
            if output.json { try printJSON(pools); return }
            guard !pools.isEmpty else { writeStdout("no pools; define one with `passage pools define NAME --vendor … --pf …`\n"); return }
            var t = Table(headers: ["POOL", "SELECTOR", "MEMBERS", "FREE", "CLAIMED", "SOURCE"])
            for p in pools {
                t.rows.append([p.name, describe(p.selector), String(p.members.count), String(p.free), String(p.claimed), p.source])
            }
            writeStdout(t.render(width: terminalWidth()))
        }
    }
}

func describe(_ s: DeviceSelector) -> String {
    var parts: [String] = []
    if let v = s.vendorId { parts.append("vendor=\(v)") }
    if let v = s.deviceId { parts.append("device=\(v)") }
    if let v = s.classCode { parts.append("class=\(v)") }
    if let v = s.pf { parts.append("pf=\(v)") }
    if let v = s.numaNode { parts.append("numa=\(v)") }
    if let v = s.driver { parts.append("driver=\(v)") }
    return parts.joined(separator: " ")
}

struct PoolsDefine: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "define", abstract: "Define (or redefine) a pool by a selector.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("The pool's name (a-z, 0-9, '-', '_', '.').", valueName: "NAME")) var name: String
    @OptionGroup var select: SelectorOptions

    func run() throws {
        try reportingErrors(json: output.json) {
            let pool = try daemon.client.send("PUT", "/v1/pools/\(name)", body: PoolRequest(selector: select.selector), as: PoolInfo.self)
            if output.json { try printJSON(pool); return }
            writeStdout("pool \(pool.name): \(describe(pool.selector)); \(pool.members.count) member(s), \(pool.free) free\n")
        }
    }
}

struct PoolsDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a pool (claims made from it stay).")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("The pool's name.", valueName: "NAME")) var name: String

    func run() throws {
        try reportingErrors(json: output.json) {
            let pool = try daemon.client.delete("/v1/pools/\(name)", as: PoolInfo.self)
            if output.json { try printJSON(pool); return }
            writeStdout("pool \(pool.name) deleted\n")
        }
    }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Show passaged's events: devices appearing, vanishing and changing, claims, operation progress."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Flag(name: .long, help: "Keep following new events.")
    var follow = false

    @Option(name: .long, help: ArgumentHelp("Start after this sequence number (0: all kept).", valueName: "N"))
    var since: Int = 0

    func run() throws {
        try reportingErrors(json: output.json) {
            let json = output.json
            try daemon.client.stream("/v1/events?since=\(since)") { line in
                if json {
                    writeStdout(line + "\n")
                } else if let e = try? JSONDecoder().decode(EventInfo.self, from: Data(line.utf8)) {
                    writeStdout("\(e.seq)  \(e.time)  \(e.kind)  \(e.message)\n")
                }
                return true
            } until: { follow }
        }
    }
}

extension DaemonClient {
    /// Streams events; without `follow` it stops once the kept ones have been shown (when the stream goes quiet).
    func stream(_ path: String, line: @escaping (String) -> Bool, until follow: () -> Bool) throws(CLIError) {
        if follow() { try stream(path, line: line); return }
        // Not following: the kept events arrive at once; stop at the first pause.
        let client = UnixHTTPClient(socketPath: socketPath, timeout: 0.5)
        do {
            try client.stream(path, line: line)
        } catch {
            if error.errno == EAGAIN || error.errno == EWOULDBLOCK { return }
            throw DaemonClient.unreachable(socketPath, error)
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Is passaged up and reconciled; devices and claims.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    func run() throws {
        try reportingErrors(json: output.json) {
            let health: HealthInfo
            do throws(CLIError) {
                health = try daemon.client.get("/v1/health", as: HealthInfo.self)
            } catch {
                // 503 with a health body: up, not reconciled yet.
                guard error.code == "http-503" else { throw error }
                throw CLIError(code: "reconciling", message: "passaged is up but still reconciling its state after start-up", exitCode: 69)
            }
            if output.json { try printJSON(health); return }
            writeStdout("""
                passaged \(health.version): \(health.status), up \(Int(health.uptimeSeconds)) s
                devices: \(health.devices), active claims: \(health.activeClaims)
                socket: \(daemon.path)\(health.sysfsRoot.map { ", sysfs: \($0)" } ?? "")

                """)
        }
    }
}
