import ArgumentParser
import FoundationEssentials
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// `passage-vmm`: boots one Linux guest directly (no firmware) and runs it until it powers off.
@main
struct PassageVMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passage-vmm",
        abstract: "Boot a Linux guest on KVM (64-bit direct kernel entry, serial console).",
        discussion: """
        Exit status: 0 when the guest powers off or resets (guests use reboot=k), 3 when it crashes,
        130 when stopped by SIGINT/SIGTERM or Ctrl-A x, 1 on a VMM error, 64 on a usage error.
        See docs/vmm.md.
        """
    )

    @Option(name: .long, help: "JSON configuration file (keys: kernel, initramfs, cmdline, memory, vcpus, console, hugePages). Options given as well override it.")
    var config: String?

    @Option(name: .long, help: "The bzImage to boot (e.g. /boot/vmlinuz-VERSION).")
    var kernel: String?

    @Option(name: [.long, .customLong("initramfs")], help: "The initramfs.")
    var initrd: String?

    @Option(name: .long, help: "The kernel command line (default: \"\(VMConfig.defaultCommandLine)\").")
    var cmdline: String?

    @Option(name: .long, help: "Guest memory: 512M, 2G, … (default 512M).")
    var memory: String?

    @Option(name: .long, help: "Number of vCPUs (default 1).")
    var vcpus: Int?

    @Option(name: .long, help: "Serial console: stdout, file:PATH or none (default stdout).")
    var console: String?

    @Flag(name: .long, help: "Back guest memory with transparent huge pages.")
    var hugePages = false

    @Flag(name: .long, help: "Print the effective configuration as JSON and exit.")
    var printConfig = false

    @Flag(name: .long, help: "At exit, print the VMM's resident memory and the guest memory touched, to stderr.")
    var stats = false

    func effectiveConfig() throws -> VMConfig {
        var c: VMConfig
        if let path = config {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("cannot read the configuration file \(path)")
            }
            do { c = try JSONDecoder().decode(VMConfig.self, from: data) } catch let e as DecodingError {
                throw ValidationError("configuration file \(path): \(Self.describe(e))")
            }
        } else {
            guard let kernel else { throw ValidationError("give --kernel (or --config FILE)") }
            c = VMConfig(kernel: kernel)
        }
        if let kernel { c.kernel = kernel }
        if let initrd { c.initramfs = initrd }
        if let cmdline { c.commandLine = cmdline }
        if let memory { c.memory = try wrap { () throws(VMMError) in try VMConfig.parseMemory(memory) } }
        if let vcpus { c.vcpus = vcpus }
        if let console { c.console = try wrap { () throws(VMMError) in try VMConfig.ConsoleTarget(parsing: console) } }
        if hugePages { c.hugePages = true }
        return c
    }

    func wrap<T>(_ body: () throws(VMMError) -> T) throws -> T {
        do { return try body() } catch { throw ValidationError(error.message) }
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case .keyNotFound(let k, _): return "missing key \"\(k.stringValue)\""
        case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
            let path = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            return (path.isEmpty ? "" : "\"\(path)\": ") + ctx.debugDescription
        @unknown default: return "\(e)"
        }
    }

    func run() throws {
        let c = try effectiveConfig()
        if printConfig {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(c), as: UTF8.self))
            return
        }
        let exit: MachineExit
        let machine: Machine
        do {
            machine = try Machine(config: c)
            exit = try machine.run()
        } catch {
            printError("passage-vmm: error: \(error.message)")
            throw ExitCode(1)
        }
        if stats {
            let m = machine.memoryUsage()
            printError("passage-vmm: stats rss_kib=\(m.processResident / 1024) guest_resident_kib=\(m.guestResident / 1024) overhead_kib=\((m.processResident - m.guestResident) / 1024)")
        }
        printError("passage-vmm: \(exit)")
        if exit.exitStatus != 0 { throw ExitCode(exit.exitStatus) }
    }
}

/// One line to standard error, unbuffered.
func printError(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}
