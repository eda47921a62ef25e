import ArgumentParser
import Foundation
import HostPCI
import PassageAPI
import PassageDaemon

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check the policy file and apply it (docs/configuration.md).",
        subcommands: [PolicyCheck.self, PolicyApply.self]
    )
}

struct PolicyCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Parse a policy file and show what applying it would do to this host (changes nothing).",
        discussion: "Errors name the file, line and field. Exit status 65 when the file is invalid."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    @Argument(help: ArgumentHelp("The policy file (default \(Policy.defaultPath)).", valueName: "FILE"))
    var file: String = Policy.defaultPath

    func run() throws {
        try reportingErrors(json: output.json) {
            guard FileManager.default.fileExists(atPath: file) else {
                throw CLIError(code: "not-found", message: "\(file) does not exist (a missing policy file means nothing is wanted)", exitCode: 66)
            }
            let p: Policy
            do { p = try Policy.load(file) } catch {
                throw CLIError(code: "policy-invalid", message: "\(error)", exitCode: 65)
            }
            let inventory = PCIInventory(root: sysfs.root, lookUpNames: false)
            let devices = try inventory.devices()
            let snapshot = InventoryCache.Snapshot(devices: devices, groups: inventory.groups(devices: devices))
            // Claims are the daemon's; when it runs, its holds count (a claimed VF is never moved).
            let holds = (try? ClientOptions.parse([]).client.get("/v1/claims?state=active", as: [ClaimInfo].self))
                .map { claims in Dictionary(claims.flatMap { c in c.groups.map { ($0, c.id) } }, uniquingKeysWith: { a, _ in a }) } ?? [:]
            let steps = PolicyPlanner(root: sysfs.root).plan(p, snapshot: snapshot, holds: holds)
            let info = PolicyInfo(file: file, present: true, pfRules: p.pfs.count, pools: p.pools.map(\.name), steps: steps)
            if output.json { try printJSON(info); return }
            writeStdout("\(file): valid; \(p.pfs.count) PF rule\(p.pfs.count == 1 ? "" : "s"), \(p.pools.count) pool\(p.pools.count == 1 ? "" : "s")\n" + describe(steps))
        }
    }
}

struct PolicyApply: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Have passaged reload its policy file and apply it now (--dry-run: show the plan only).",
        discussion: "Needs a running passaged: it records every change as an intent and knows the claims. A file that does not parse is refused and the policy in force stays."
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Flag(name: .long, help: "Show the plan for the file as it is now; change nothing.")
    var dryRun = false

    func run() throws {
        try reportingErrors(json: output.json) {
            let info = try daemon.client.send("POST", "/v1/policy/apply", body: PolicyApplyRequest(dryRun: dryRun ? true : nil), as: PolicyInfo.self)
            if output.json { try printJSON(info); return }
            writeStdout("\(info.file): \(info.pfRules) PF rule\(info.pfRules == 1 ? "" : "s"), \(info.pools.count) pool\(info.pools.count == 1 ? "" : "s")\(dryRun ? " (dry run)" : "")\n" + describe(info.steps))
            if info.steps.contains(where: { $0.outcome == "failed" }) { throw ExitCode(1) }
        }
    }
}

func describe(_ steps: [PolicyStepInfo]) -> String {
    steps.map { s in
        "  \(s.pf ?? "-")  \(s.rule): \(s.action)  \(s.detail)" + (s.outcome.map { "  → \($0)" } ?? "") + (s.error.map { ": \($0)" } ?? "") + "\n"
    }.joined()
}
