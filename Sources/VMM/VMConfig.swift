/// Everything that describes one VM, as the command line or a JSON file gives it.
///
/// JSON (every key but `kernel` optional):
/// ```json
/// {"kernel": "/boot/vmlinuz", "initramfs": "/boot/initrd.img", "cmdline": "console=ttyS0",
///  "memory": "512M", "vcpus": 2, "console": "file:/tmp/console.log", "hugePages": false,
///  "vfio": ["0000:01:00.1"], "kernelUnpack": "host", "kernelCache": "/var/cache/passage/kernels"}
/// ```
public struct VMConfig: Sendable, Codable, Equatable {
    /// Where the serial console goes.
    public enum ConsoleTarget: Sendable, Equatable, Codable, CustomStringConvertible {
        case stdout
        case file(String)
        case none

        /// `stdout`, `file:PATH` or `none`.
        public init(parsing text: String) throws(VMMError) {
            switch text {
            case "stdout": self = .stdout
            case "none", "off": self = .none
            default:
                guard text.hasPrefix("file:"), text.count > 5 else {
                    throw VMMError(.badConfiguration, "console '\(text)' is not one of stdout, none, file:PATH")
                }
                self = .file(String(text.dropFirst(5)))
            }
        }

        public var description: String {
            switch self {
            case .stdout: "stdout"
            case .none: "none"
            case .file(let p): "file:" + p
            }
        }

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            do { self = try ConsoleTarget(parsing: text) } catch {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(description)
        }
    }

    public static let defaultCommandLine = "console=ttyS0 reboot=k panic=-1"
    public static let defaultMemory: UInt64 = 512 << 20

    public var kernel: String
    public var initramfs: String?
    public var commandLine: String
    /// Guest RAM in bytes.
    public var memory: UInt64
    public var vcpus: Int
    public var console: ConsoleTarget
    /// Ask for transparent huge pages behind guest memory.
    public var hugePages: Bool
    /// Host PCI functions (bound to vfio-pci) to pass through, as `DDDD:BB:DD.F`.
    public var vfio: [String] = []
    /// Who unpacks a bzImage (`KernelUnpackMode`).
    public var kernelUnpack: KernelUnpackMode = .host
    /// How passed-through devices are opened and their DMA mapped (`VFIOBackend`).
    public var vfioBackend: VFIOBackend = .auto
    /// Where unpacked kernels are kept: a directory, `off`, or nil for `KernelCache.resolve`'s default.
    public var kernelCache: String?

    public init(kernel: String, initramfs: String? = nil, commandLine: String = VMConfig.defaultCommandLine,
                memory: UInt64 = VMConfig.defaultMemory, vcpus: Int = 1, console: ConsoleTarget = .stdout, hugePages: Bool = false) {
        self.kernel = kernel
        self.initramfs = initramfs
        self.commandLine = commandLine
        self.memory = memory
        self.vcpus = vcpus
        self.console = console
        self.hugePages = hugePages
    }

    enum CodingKeys: String, CodingKey {
        case kernel, initramfs, initrd, cmdline, memory, vcpus, console, hugePages, vfio, kernelUnpack, kernelCache, vfioBackend
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kernel = try c.decode(String.self, forKey: .kernel)
        initramfs = try c.decodeIfPresent(String.self, forKey: .initramfs) ?? c.decodeIfPresent(String.self, forKey: .initrd)
        commandLine = try c.decodeIfPresent(String.self, forKey: .cmdline) ?? Self.defaultCommandLine
        if let text = try? c.decodeIfPresent(String.self, forKey: .memory) {
            do { memory = try Self.parseMemory(text) } catch {
                throw DecodingError.dataCorruptedError(forKey: .memory, in: c, debugDescription: error.message)
            }
        } else if let mib = try c.decodeIfPresent(UInt64.self, forKey: .memory) {
            memory = mib << 20
        } else {
            memory = Self.defaultMemory
        }
        vcpus = try c.decodeIfPresent(Int.self, forKey: .vcpus) ?? 1
        console = try c.decodeIfPresent(ConsoleTarget.self, forKey: .console) ?? .stdout
        hugePages = try c.decodeIfPresent(Bool.self, forKey: .hugePages) ?? false
        vfio = try c.decodeIfPresent([String].self, forKey: .vfio) ?? []
        if let text = try c.decodeIfPresent(String.self, forKey: .kernelUnpack) {
            guard let mode = KernelUnpackMode(rawValue: text) else {
                throw DecodingError.dataCorruptedError(forKey: .kernelUnpack, in: c, debugDescription: "kernelUnpack '\(text)' is not one of host, guest")
            }
            kernelUnpack = mode
        }
        kernelCache = try c.decodeIfPresent(String.self, forKey: .kernelCache)
        if let text = try c.decodeIfPresent(String.self, forKey: .vfioBackend) {
            guard let backend = VFIOBackend(rawValue: text) else {
                throw DecodingError.dataCorruptedError(forKey: .vfioBackend, in: c, debugDescription: "vfioBackend '\(text)' is not one of auto, iommufd, type1")
            }
            vfioBackend = backend
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kernel, forKey: .kernel)
        try c.encodeIfPresent(initramfs, forKey: .initramfs)
        try c.encode(commandLine, forKey: .cmdline)
        try c.encode(memory % (1 << 20) == 0 ? "\(memory >> 20)M" : "\(memory >> 10)K", forKey: .memory)
        try c.encode(vcpus, forKey: .vcpus)
        try c.encode(console, forKey: .console)
        try c.encode(hugePages, forKey: .hugePages)
        if !vfio.isEmpty { try c.encode(vfio, forKey: .vfio) }
        try c.encode(kernelUnpack.rawValue, forKey: .kernelUnpack)
        try c.encodeIfPresent(kernelCache, forKey: .kernelCache)
        if vfioBackend != .auto { try c.encode(vfioBackend.rawValue, forKey: .vfioBackend) }
    }

    /// `512M`, `2G`, `262144K`, or a plain number of MiB.
    public static func parseMemory(_ text: String) throws(VMMError) -> UInt64 {
        var digits = Substring(text)
        var shift: UInt64 = 20
        switch digits.last {
        case "K", "k": shift = 10; digits = digits.dropLast()
        case "M", "m": shift = 20; digits = digits.dropLast()
        case "G", "g": shift = 30; digits = digits.dropLast()
        default: break
        }
        guard let n = UInt64(digits), n > 0, n < (1 << (63 - shift)) else {
            throw VMMError(.badConfiguration, "memory size '\(text)' is not a number with an optional K, M or G suffix (e.g. 512M)")
        }
        return n << shift
    }

    /// Checks ranges before anything is allocated.
    public func validate() throws(VMMError) {
        guard vcpus >= 1, vcpus <= MPTable.maximumCPUs else {
            throw VMMError(.badConfiguration, "vcpus must be between 1 and \(MPTable.maximumCPUs), not \(vcpus)")
        }
        guard memory >= 32 << 20 else {
            throw VMMError(.notEnoughMemory, "\(memory >> 20) MiB is too little guest memory: Linux needs at least 32 MiB, and a distribution kernel about 128 MiB")
        }
        guard memory % 4096 == 0 else { throw VMMError(.badConfiguration, "guest memory must be a multiple of 4 KiB") }
        guard memory <= 1 << 40 else { throw VMMError(.badConfiguration, "guest memory above 1 TiB is not supported") }
        var seen: Set<String> = []
        for address in vfio {
            guard Self.isPCIAddress(address) else {
                throw VMMError(.badConfiguration, "'\(address)' is not a PCI address: give the full DDDD:BB:DD.F form in lower-case hex, e.g. 0000:01:00.1")
            }
            guard seen.insert(address).inserted else { throw VMMError(.badConfiguration, "\(address) is given twice to pass through") }
        }
        if let dir = kernelCache, dir != "off", dir != "none", !dir.hasPrefix("/") {
            throw VMMError(.badConfiguration, "kernelCache '\(dir)' is not an absolute directory path or off")
        }
        guard vfio.count <= 31 else { throw VMMError(.badConfiguration, "at most 31 devices can be passed through (one PCI bus), not \(vfio.count)") }
    }

    /// `DDDD:BB:DD.F`: four, two, two hex digits (lower case), a device below 0x20, a function below 8.
    public static func isPCIAddress(_ text: String) -> Bool {
        let u = Array(text.utf8)
        guard u.count == 12, u[4] == UInt8(ascii: ":"), u[7] == UInt8(ascii: ":"), u[10] == UInt8(ascii: ".") else { return false }
        let hex = { (c: UInt8) in (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }
        guard [0, 1, 2, 3, 5, 6, 8, 9].allSatisfy({ hex(u[$0]) }), (0x30...0x37).contains(u[11]) else { return false }
        let device = Int(String(decoding: u[8...9], as: UTF8.self), radix: 16) ?? 0xFF
        return device < 0x20
    }
}
