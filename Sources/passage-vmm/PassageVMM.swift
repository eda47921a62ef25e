import VMM
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `passage-vmm`: boots one Linux guest directly (no firmware) and runs it until it powers off.
/// Only the Swift runtime and libc: the command line is `VMMArguments`, the configuration file
/// `StrictJSON` (docs/vmm.md).
@main
enum PassageVMM {
    static func main() {
        let started = Clock.now()
        // Only the descriptors the VMM opens itself (a parent's leaks never reach the guest's side).
        VMMSeccomp.closeInheritedDescriptors()
        let args: VMMArguments
        do { args = try VMMArguments.parse(CommandLine.arguments.dropFirst()) } catch { usageError(error) }
        if args.help {
            print(VMMArguments.helpText, terminator: "")
            exit(0)
        }
        let config: VMConfig
        do { config = try args.effectiveConfig() } catch { usageError(error) }
        if args.printConfig {
            print(config.jsonText)
            exit(0)
        }
        if args.prepareKernel {
            do { printError("passage-vmm: " + (try LinuxLoader.prepare(config))) } catch {
                printError("passage-vmm: error: \(error.message)")
                exit(1)
            }
            exit(0)
        }

        let machine: Machine
        let end: MachineExit
        do {
            machine = try Machine(config: config)
            if args.stats {
                // exec → main is the dynamic loader and the runtime's start-up; main → run is KVM,
                // guest memory, the kernel and initramfs read in, vCPUs set up.
                let ready = Clock.now()
                let exec = Clock.processStart()
                let execText = exec.map { "\(Int((started - $0) * 1000))" } ?? "?"
                let l = machine.loaded
                printError("passage-vmm: timing exec_to_main_ms=\(execText) main_to_first_run_ms=\(Int((ready - started) * 1000))"
                           + " kernel=\(l.kernelSource)" + (l.kernelSource == "unpacked" || l.kernelSource == "cached" ? " unpack_ms=\(l.unpackMilliseconds) kaslr=\(l.kaslr ? "on" : "off")" : "")
                           + (machine.passthroughTimes.map { " passthrough_setup_ms=\($0.setup / 1_000_000) dma_map_ms=\($0.dmaMap / 1_000_000) vfio=\($0.backend.rawValue)" } ?? ""))
            }
            end = try machine.run(sandbox: !args.noSeccomp)
        } catch {
            printError("passage-vmm: error: \(error.message)")
            exit(1)
        }
        if args.stats {
            // first run → first console byte: the decompressor (a bzImage's) and the kernel up to
            // its first console line (with `quiet`, that may be the last).
            let t = machine.timeline
            func ms(_ from: Int64?, _ to: Int64?) -> String { from.flatMap { f in to.map { "\(($0 - f) / 1_000_000)" } } ?? "?" }
            printError("passage-vmm: timing first_run_to_console_ms=\(ms(t.startedAt, t.firstConsoleByteAt)) first_run_to_end_ms=\(ms(t.startedAt, MachineTimeline.now()))")
            let m = machine.memoryUsage()
            printError("passage-vmm: stats rss_kib=\(m.processResident / 1024) guest_resident_kib=\(m.guestResident / 1024) overhead_kib=\((m.processResident - m.guestResident) / 1024)")
        }
        printError("passage-vmm: \(end)")
        exit(end.exitStatus)
    }

    static func usageError(_ error: VMMArguments.UsageError) -> Never {
        printError("passage-vmm: error: \(error.message)\n\(VMMArguments.usage)\nSee 'passage-vmm --help'.")
        exit(64)
    }
}

enum Clock {
    /// CLOCK_BOOTTIME in seconds: the clock /proc/PID/stat's start time counts on.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// When this process was started (exec'd), from field 22 of /proc/self/stat (clock ticks since boot).
    static func processStart() -> Double? {
        let fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1024)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return nil }
        // The command name (field 2) may hold spaces; fields after it follow the last ')'.
        guard let paren = buf[0..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buf[(paren + 2)..<n].split(separator: UInt8(ascii: " "))
        guard fields.count > 19, let ticks = Int(String(decoding: fields[19], as: UTF8.self)) else { return nil }
        return Double(ticks) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// One line to standard error, unbuffered.
func printError(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}
