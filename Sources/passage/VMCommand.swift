import ArgumentParser
import Foundation
import PassageAPI

struct VMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Start, list, stop VMs that passaged runs with passage-vmm, and show their consoles.",
        subcommands: [VMStart.self, VMList.self, VMStop.self, VMConsole.self]
    )
}

struct VMStart: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a VM (the daemon runs passage-vmm as its child).")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("The VM's name.", valueName: "NAME")) var name: String
    @Option(name: .long, help: ArgumentHelp("bzImage (paths are opened by passaged, on the host).", valueName: "FILE")) var kernel: String
    @Option(name: [.long, .customLong("initramfs")], help: ArgumentHelp("The initramfs.", valueName: "FILE")) var initrd: String?
    @Option(name: .long, help: "The kernel command line.") var cmdline: String?
    @Option(name: .long, help: "Guest memory: 512M, 2G.") var memory: String?
    @Option(name: .long, help: "vCPUs.") var vcpus: Int?
    @Option(name: .long, help: ArgumentHelp("A claim whose devices the guest gets.", valueName: "ID")) var claim: String?
    @Option(name: .customLong("device"), help: ArgumentHelp("Claim this device for the VM (owner vm:NAME) and pass it through; repeatable.", valueName: "ADDRESS")) var devices: [String] = []

    func run() throws {
        try reportingErrors(json: output.json) {
            func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p }
            let request = VMStartRequest(name: name, kernel: absolute(kernel), initramfs: initrd.map(absolute), cmdline: cmdline, memory: memory, vcpus: vcpus, claim: claim,
                                          devices: devices.isEmpty ? nil : devices)
            let vm = try daemon.client.send("POST", "/v1/vms", body: request, as: VMInfo.self)
            if output.json { try printJSON(vm); return }
            writeStdout("VM \(vm.name): \(vm.state), passage-vmm pid \(vm.pid.map(String.init) ?? "?")"
                        + (vm.claim.map { "; devices of claim \($0) passed through" } ?? "") + "; console: passage vm console \(vm.name)\n")
        }
    }
}

struct VMList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "VMs and their state.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    func run() throws {
        try reportingErrors(json: output.json) {
            let vms = try daemon.client.get("/v1/vms", as: [VMInfo].self)
            if output.json { try printJSON(vms); return }
            guard !vms.isEmpty else { writeStdout("no VMs\n"); return }
            var t = Table(headers: ["VM", "STATE", "PID", "EXIT", "CLAIM", "STARTED", "MESSAGE"])
            for v in vms {
                t.rows.append([v.name, v.state, v.pid.map(String.init) ?? "-", v.exitStatus.map(String.init) ?? "-", v.claim ?? "-", v.startedAt, v.message ?? ""])
            }
            writeStdout(t.render(width: terminalWidth()))
        }
    }
}

struct VMStop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a VM (SIGTERM to its VMM, SIGKILL after 10 s); its claim stays until released.")

    @OptionGroup var output: OutputOptions
    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("The VM's name.", valueName: "NAME")) var name: String

    func run() throws {
        try reportingErrors(json: output.json) {
            let vm = try daemon.client.send("POST", "/v1/vms/\(name)/stop", body: [String: String](), as: VMInfo.self)
            if output.json { try printJSON(vm); return }
            writeStdout("VM \(vm.name): \(vm.state)" + (vm.exitStatus.map { " (exit status \($0))" } ?? "") + (vm.claim.map { "; claim \($0) is still held: passage release \($0)" } ?? "") + "\n")
        }
    }
}

struct VMConsole: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "console", abstract: "Print the end of a VM's serial console (the last 64 KiB).")

    @OptionGroup var daemon: ClientOptions

    @Argument(help: ArgumentHelp("The VM's name.", valueName: "NAME")) var name: String

    func run() throws {
        try reportingErrors(json: false) {
            writeStdout(try daemon.client.text("/v1/vms/\(name)/console"))
        }
    }
}
