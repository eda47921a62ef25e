/// passage-vmm's command line, parsed by hand (no ArgumentParser, no Foundation: the VMM binary
/// links nothing but the Swift runtime and libc). `--name value` and `--name=value`; the last of
/// a repeated option wins (except --vfio, which adds); `-h`/`--help` anywhere asks for help.
public struct VMMArguments: Sendable, Equatable {
    public var config: String?
    public var kernel: String?
    public var initrd: String?
    public var cmdline: String?
    /// Bytes, already parsed from `512M` etc.
    public var memory: UInt64?
    public var vcpus: Int?
    public var console: VMConfig.ConsoleTarget?
    public var hugePages = false
    public var kernelUnpack: KernelUnpackMode?
    public var kernelCache: String?
    public var vfioBackend: VFIOBackend?
    /// `--vfio ADDR`, in order (repeatable).
    public var vfio: [String] = []
    public var noSeccomp = false
    public var printConfig = false
    public var prepareKernel = false
    public var stats = false
    public var help = false

    public init() {}

    /// A command line passage-vmm cannot run with: exit status 64, the message, the usage line.
    public struct UsageError: Error, Sendable, Equatable, CustomStringConvertible {
        public let message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message }
    }

    struct Option {
        let names: [String]
        /// nil for a flag.
        let value: String?
        let help: String
    }

    static let options: [Option] = [
        Option(names: ["--config"], value: "file",
               help: "JSON configuration file (keys: kernel, initramfs, cmdline, memory, vcpus, console, hugePages, vfio, vfioBackend, kernelUnpack, kernelCache). Options given as well override it."),
        Option(names: ["--kernel"], value: "kernel", help: "The bzImage to boot (e.g. /boot/vmlinuz-VERSION)."),
        Option(names: ["--initrd", "--initramfs"], value: "initrd", help: "The initramfs."),
        Option(names: ["--cmdline"], value: "cmdline", help: "The kernel command line (default: \"\(VMConfig.defaultCommandLine)\")."),
        Option(names: ["--memory"], value: "memory", help: "Guest memory: 512M, 2G, 262144K; a plain number is MiB (default 512M)."),
        Option(names: ["--vcpus"], value: "vcpus", help: "Number of vCPUs, 1…\(MPTable.maximumCPUs) (default 1)."),
        Option(names: ["--console"], value: "console", help: "Serial console: stdout, file:PATH or none (default stdout)."),
        Option(names: ["--vfio"], value: "address", help: "Pass through the host PCI function at this address (bound to vfio-pci, its whole IOMMU group viable); repeat for more. Added to the configuration file's list."),
        Option(names: ["--vfio-backend"], value: "backend",
               help: "How --vfio devices are opened and their DMA mapped: iommufd (/dev/iommu and the device's /dev/vfio/devices/vfioN, Linux 6.6+), type1 (the /dev/vfio/vfio container and /dev/vfio/GROUP), or auto (iommufd when the kernel has it for every device, else type1; the default)."),
        Option(names: ["--kernel-unpack"], value: "where",
               help: "Who unpacks a bzImage: host (passage-vmm, with liblzma, cached; KASLR applied here; the default) or guest (the kernel's own decompressor, as QEMU boots it)."),
        Option(names: ["--kernel-cache"], value: "dir",
               help: "Where unpacked kernels are kept, or off (default: $PASSAGE_KERNEL_CACHE, else /var/cache/passage/kernels for root, ~/.cache/passage/kernels for others)."),
        Option(names: ["--no-seccomp"], value: nil, help: "Do not sandbox the VMM's threads (seccomp allow-lists; docs/security.md). For debugging."),
        Option(names: ["--huge-pages"], value: nil, help: "Back guest memory with transparent huge pages."),
        Option(names: ["--print-config"], value: nil, help: "Print the effective configuration as JSON and exit."),
        Option(names: ["--prepare-kernel"], value: nil,
               help: "Unpack the bzImage into the kernel cache and exit (no guest runs), so that the next start skips the unpacking."),
        Option(names: ["--stats"], value: nil, help: "Print startup timings and, at exit, the VMM's resident memory and the guest memory touched, to stderr."),
        Option(names: ["-h", "--help"], value: nil, help: "Show this help."),
    ]

    public static let usage = """
        Usage: passage-vmm --kernel BZIMAGE [--initrd FILE] [--cmdline TEXT] [--memory SIZE]
                   [--vcpus N] [--console stdout|file:PATH|none] [--vfio DDDD:BB:DD.F]…
                   [--vfio-backend auto|iommufd|type1] [--huge-pages]
                   [--kernel-unpack host|guest] [--kernel-cache DIR|off] [--stats]
               passage-vmm --config FILE [options] [--print-config]
        """

    public static var helpText: String {
        var out = """
        passage-vmm: boot a Linux guest on KVM (64-bit direct kernel entry, serial console).

        \(usage)

        Options:

        """
        for o in options {
            var left = "  " + o.names.joined(separator: ", ")
            if let v = o.value { left += " <\(v)>" }
            if left.count > 26 { out += left + "\n" + String(repeating: " ", count: 28) } else { out += left + String(repeating: " ", count: 28 - left.count) }
            out += wrap(o.help, width: 52).joined(separator: "\n" + String(repeating: " ", count: 28)) + "\n"
        }
        out += """

        Exit status: 0 the guest powered off or reset the machine (guests use reboot=k),
        3 the guest crashed, 130 stopped by SIGINT/SIGTERM or Ctrl-A x, 1 a VMM error,
        64 a usage error. See docs/vmm.md.

        """
        return out
    }

    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = [], line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > width { lines.append(line); line = "" }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    /// Parses the arguments after the program name.
    public static func parse(_ arguments: some Sequence<String>) throws(UsageError) -> VMMArguments {
        let args = Array(arguments)
        var result = VMMArguments()
        if args.contains(where: { $0 == "-h" || $0 == "--help" }) {
            result.help = true
            return result
        }
        func isOption(_ arg: String) -> Bool {
            let name = arg.split(separator: "=", maxSplits: 1).first.map(String.init) ?? arg
            return options.contains { $0.names.contains(name) }
        }
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            guard arg.hasPrefix("-"), arg.count > 1 else {
                throw UsageError("unexpected argument '\(arg)' (every setting is an option such as --kernel; see --help)")
            }
            var name = arg
            var inlineValue: String?
            if let eq = arg.firstIndex(of: "=") {
                name = String(arg[..<eq])
                inlineValue = String(arg[arg.index(after: eq)...])
            }
            guard let option = options.first(where: { $0.names.contains(name) }) else {
                throw UsageError("unknown option '\(name)'\(suggestion(for: name))")
            }
            let canonical = option.names.last!
            guard option.value != nil else {
                if inlineValue != nil { throw UsageError("'\(name)' is a flag and takes no value") }
                switch canonical {
                case "--huge-pages": result.hugePages = true
                case "--no-seccomp": result.noSeccomp = true
                case "--print-config": result.printConfig = true
                case "--prepare-kernel": result.prepareKernel = true
                case "--stats": result.stats = true
                default: break
                }
                continue
            }
            let value: String
            if let inlineValue {
                value = inlineValue
            } else {
                guard i < args.count, !isOption(args[i]) else {
                    throw UsageError("'\(name)' needs a value: \(name) <\(option.value!)> (or \(name)=VALUE)")
                }
                value = args[i]
                i += 1
            }
            guard !value.isEmpty else { throw UsageError("'\(name)' needs a value, not an empty string") }
            switch canonical {
            case "--config": result.config = value
            case "--kernel": result.kernel = value
            case "--initramfs": result.initrd = value
            case "--cmdline": result.cmdline = value
            case "--memory":
                do { result.memory = try VMConfig.parseMemory(value) } catch { throw UsageError("--memory: \(error.message)") }
            case "--vcpus":
                guard let n = Int(value) else { throw UsageError("--vcpus: '\(value)' is not a whole number") }
                result.vcpus = n
            case "--vfio":
                guard VMConfig.isPCIAddress(value) else {
                    throw UsageError("--vfio: '\(value)' is not a PCI address: give the full DDDD:BB:DD.F form in lower-case hex, e.g. 0000:01:00.1")
                }
                result.vfio.append(value)
            case "--vfio-backend":
                guard let backend = VFIOBackend(rawValue: value) else {
                    throw UsageError("--vfio-backend: '\(value)' is not one of auto, iommufd, type1")
                }
                result.vfioBackend = backend
            case "--kernel-unpack":
                guard let mode = KernelUnpackMode(rawValue: value) else {
                    throw UsageError("--kernel-unpack: '\(value)' is not one of host, guest")
                }
                result.kernelUnpack = mode
            case "--kernel-cache":
                guard value == "off" || value == "none" || value.hasPrefix("/") else {
                    throw UsageError("--kernel-cache: '\(value)' is not an absolute directory path or off")
                }
                result.kernelCache = value
            case "--console":
                do { result.console = try VMConfig.ConsoleTarget(parsing: value) } catch { throw UsageError("--console: \(error.message)") }
            default: break
            }
        }
        return result
    }

    /// " (did you mean '--vcpus'?)" for a near miss, else "".
    static func suggestion(for name: String) -> String {
        let candidates = options.flatMap(\.names).filter { $0.hasPrefix("--") }
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
            var row = Array(0...b.count)
            for i in 1...a.count {
                var previous = row[0]
                row[0] = i
                for j in 1...b.count {
                    let old = row[j]
                    row[j] = min(old + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                    previous = old
                }
            }
            return row[b.count]
        }
        let scored = candidates.map { (c: $0, d: distance(Array(name), Array($0))) }.min { $0.d < $1.d }
        guard let best = scored, best.d <= 2 else { return "" }
        return " (did you mean '\(best.c)'?)"
    }

    /// The configuration: the file if `--config` was given, then the options on top of it.
    /// A missing or bad file, or neither `--kernel` nor `--config`, is a usage error.
    public func effectiveConfig() throws(UsageError) -> VMConfig {
        var c: VMConfig
        if let config {
            do { c = try VMConfig.load(configFile: config, kernel: kernel) } catch { throw UsageError(error.message) }
        } else {
            guard let kernel else { throw UsageError("give --kernel BZIMAGE (or --config FILE)") }
            c = VMConfig(kernel: kernel)
        }
        if let kernel { c.kernel = kernel }
        if let initrd { c.initramfs = initrd }
        if let cmdline { c.commandLine = cmdline }
        if let memory { c.memory = memory }
        if let vcpus { c.vcpus = vcpus }
        if let console { c.console = console }
        if hugePages { c.hugePages = true }
        if let kernelUnpack { c.kernelUnpack = kernelUnpack }
        if let kernelCache { c.kernelCache = kernelCache }
        if let vfioBackend { c.vfioBackend = vfioBackend }
        for a in vfio where !c.vfio.contains(a) { c.vfio.append(a) }
        return c
    }
}
