/// The configuration file without Foundation: strict decoding through `StrictJSON`, and the
/// `--print-config` text. (`Codable` stays for the daemon; passage-vmm uses only this.)
extension VMConfig {
    /// Every key a configuration file may hold (`initrd` is another name for `initramfs`).
    public static let jsonKeys = ["kernel", "initramfs", "initrd", "cmdline", "memory", "vcpus", "console", "hugePages", "vfio",
                                       "kernelUnpack", "kernelCache", "vfioBackend"]

    /// The largest configuration file read (they are a few hundred bytes).
    public static let maximumConfigFileSize = 1 << 20

    /// Reads and decodes the configuration file at `path`. `kernel` is used when the file has no
    /// `kernel` key (the command line gave one); without either the file is refused.
    public static func load(configFile path: String, kernel: String? = nil) throws(VMMError) -> VMConfig {
        let file = try HostFile(path, what: "the configuration file", code: .badConfiguration)
        guard file.size <= maximumConfigFileSize else {
            throw VMMError(.badConfiguration, "configuration file \(path) is \(file.size) bytes; a VM configuration is a small JSON object (at most \(maximumConfigFileSize) bytes)")
        }
        return try VMConfig(json: try file.prefix(file.size), file: path, kernel: kernel)
    }

    /// Decodes a configuration file's bytes strictly: one JSON object whose keys are all among
    /// `jsonKeys`, each once, each of its type; nothing after it. Messages name `file` and the key.
    public init(json bytes: some Collection<UInt8>, file: String, kernel kernelIfMissing: String? = nil) throws(VMMError) {
        func bad(_ why: String) -> VMMError { VMMError(.badConfiguration, "configuration file \(file): \(why)") }
        let root: JSONValue
        do { root = try StrictJSON.parse(bytes) } catch { throw bad("not valid JSON: \(error)") }
        guard case .object(let members) = root else {
            throw bad("expected a JSON object ({\"kernel\": …}), found \(root.kindDescription)")
        }
        var seen: Set<String> = []
        for m in members {
            guard Self.jsonKeys.contains(m.key) else {
                throw bad("unknown key \(StrictJSON.quote(m.key)) (the keys are \(Self.jsonKeys.joined(separator: ", ")))")
            }
            guard seen.insert(m.key).inserted else { throw bad("key \"\(m.key)\" appears twice") }
        }
        if seen.contains("initramfs") && seen.contains("initrd") {
            throw bad("give the initramfs once: \"initramfs\" and \"initrd\" are the same key")
        }
        func value(_ key: String) -> JSONValue? { members.first { $0.key == key }?.value }
        func string(_ key: String) throws(VMMError) -> String? {
            guard let v = value(key) else { return nil }
            guard case .string(let s) = v else { throw bad("key \"\(key)\" must be a string, not \(v.kindDescription)") }
            return s
        }

        guard let kernel = try string("kernel") ?? kernelIfMissing else {
            throw bad("missing key \"kernel\" (the bzImage to boot), and no --kernel given")
        }
        self.init(kernel: kernel)
        initramfs = try string("initramfs")
        if initramfs == nil { initramfs = try string("initrd") }
        if let s = try string("cmdline") { commandLine = s }
        switch value("memory") {
        case nil: break
        case .string(let text)?:
            do { memory = try Self.parseMemory(text) } catch { throw bad("key \"memory\": \(error.message)") }
        case let v?:
            guard let mib = v.integerValue, mib > 0, mib < 1 << 43 else {
                throw bad("key \"memory\" must be a size such as \"512M\" or a whole number of MiB, not \(v.kindDescription)")
            }
            memory = UInt64(mib) << 20
        }
        if let v = value("vcpus") {
            guard let n = v.integerValue else { throw bad("key \"vcpus\" must be a whole number, not \(v.kindDescription)") }
            vcpus = n
        }
        if let s = try string("console") {
            do { console = try ConsoleTarget(parsing: s) } catch { throw bad("key \"console\": \(error.message)") }
        }
        if let v = value("hugePages") {
            guard case .bool(let b) = v else { throw bad("key \"hugePages\" must be true or false, not \(v.kindDescription)") }
            hugePages = b
        }
        if let v = value("vfio") {
            guard case .array(let items) = v else { throw bad("key \"vfio\" must be an array of PCI addresses, not \(v.kindDescription)") }
            vfio = []
            for item in items {
                guard case .string(let s) = item else { throw bad("key \"vfio\": every entry must be a PCI address string, not \(item.kindDescription)") }
                vfio.append(s)
            }
        }
        if let s = try string("kernelUnpack") {
            guard let mode = KernelUnpackMode(rawValue: s) else { throw bad("key \"kernelUnpack\" must be \"host\" or \"guest\", not \(StrictJSON.quote(s))") }
            kernelUnpack = mode
        }
        kernelCache = try string("kernelCache")
        if let s = try string("vfioBackend") {
            guard let backend = VFIOBackend(rawValue: s) else { throw bad("key \"vfioBackend\" must be \"auto\", \"iommufd\" or \"type1\", not \(StrictJSON.quote(s))") }
            vfioBackend = backend
        }
    }

    /// The configuration as the file would hold it, keys sorted, two-space indented: what
    /// `--print-config` prints, and what `init(json:file:)` reads back to the same value.
    public var jsonText: String {
        var fields: [(String, String)] = [
            ("cmdline", StrictJSON.quote(commandLine)),
            ("console", StrictJSON.quote(console.description)),
            ("hugePages", hugePages ? "true" : "false"),
        ]
        if let initramfs { fields.append(("initramfs", StrictJSON.quote(initramfs))) }
        fields.append(("kernel", StrictJSON.quote(kernel)))
        if let kernelCache { fields.append(("kernelCache", StrictJSON.quote(kernelCache))) }
        fields.append(("kernelUnpack", StrictJSON.quote(kernelUnpack.rawValue)))
        fields.append(("memory", StrictJSON.quote(memory % (1 << 20) == 0 ? "\(memory >> 20)M" : "\(memory >> 10)K")))
        fields.append(("vcpus", "\(vcpus)"))
        if !vfio.isEmpty { fields.append(("vfio", "[" + vfio.map { StrictJSON.quote($0) }.joined(separator: ", ") + "]")) }
        if vfioBackend != .auto { fields.append(("vfioBackend", StrictJSON.quote(vfioBackend.rawValue))) }
        return "{\n" + fields.map { "  \"\($0.0)\" : \($0.1)" }.joined(separator: ",\n") + "\n}"
    }
}
