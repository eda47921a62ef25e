import Foundation
import Testing
@testable import VMM

@Suite("VMM: passage-vmm's command line and strict JSON configuration")
struct VMMCommandLineTests {
    func parse(_ args: String...) throws(VMMArguments.UsageError) -> VMMArguments { try VMMArguments.parse(args) }

    func usageError(_ args: String...) -> String? {
        do { _ = try VMMArguments.parse(args); return nil } catch { return error.message }
    }

    func configError(_ json: String, kernel: String? = nil) -> String? {
        do { _ = try VMConfig(json: Array(json.utf8), file: "vm.json", kernel: kernel); return nil } catch { return error.message }
    }

    // MARK: argv

    @Test("argv: every option, both spellings, --name=value, the last of a repeat wins")
    func options() throws {
        let a = try parse("--kernel", "/k", "--initramfs=/i", "--cmdline", "console=ttyS0 quiet", "--memory", "256M",
                          "--vcpus=2", "--console", "file:/tmp/c", "--huge-pages", "--stats", "--print-config", "--config", "/c.json")
        #expect(a.kernel == "/k" && a.initrd == "/i" && a.cmdline == "console=ttyS0 quiet")
        #expect(a.memory == 256 << 20 && a.vcpus == 2 && a.console == .file("/tmp/c") && a.config == "/c.json")
        #expect(a.hugePages && a.stats && a.printConfig && !a.help)
        #expect(try parse("--initrd", "/x").initrd == "/x")
        #expect(try parse("--kernel", "/a", "--kernel", "/b").kernel == "/b")
        #expect(try parse("--cmdline=a=b c").cmdline == "a=b c")
        #expect(try parse("--cmdline", "-x not an option").cmdline == "-x not an option")
        #expect(try parse() == VMMArguments())
        let u = try parse("--kernel", "/k", "--kernel-unpack", "guest", "--kernel-cache=/var/tmp/kc")
        #expect(u.kernelUnpack == .guest && u.kernelCache == "/var/tmp/kc")
        #expect(try u.effectiveConfig().kernelUnpack == .guest)
        #expect(try parse("--kernel", "/k").effectiveConfig().kernelUnpack == .host)
        #expect(try parse("--kernel-cache", "off").kernelCache == "off")
        let b = try parse("--kernel", "/k", "--vfio-backend", "iommufd", "--vfio", "0000:01:00.1")
        #expect(try b.vfioBackend == .iommufd && b.effectiveConfig().vfioBackend == .iommufd)
        #expect(try parse("--kernel", "/k").effectiveConfig().vfioBackend == .auto)
        #expect(try parse("--vfio-backend=type1").vfioBackend == .type1)
    }

    @Test("argv: --help and -h win anywhere, even over errors")
    func help() throws {
        #expect(try parse("--help").help)
        #expect(try parse("--bogus", "-h").help)
        #expect(VMMArguments.helpText.contains("--initrd, --initramfs <initrd>"))
        #expect(VMMArguments.helpText.contains("64 a usage error"))
        for line in VMMArguments.helpText.split(separator: "\n") { #expect(line.count <= 84, "\(line)") }
    }

    @Test("argv: usage errors name the option and the problem")
    func badArguments() {
        #expect(usageError("--bogus") == "unknown option '--bogus'")
        #expect(usageError("--kernl", "/k")?.contains("did you mean '--kernel'") == true)
        #expect(usageError("extra")?.hasPrefix("unexpected argument 'extra'") == true)
        #expect(usageError("-")?.hasPrefix("unexpected argument '-'") == true)
        #expect(usageError("--kernel")?.hasPrefix("'--kernel' needs a value") == true)
        #expect(usageError("--kernel", "--stats")?.hasPrefix("'--kernel' needs a value") == true)
        #expect(usageError("--kernel=")?.contains("empty") == true)
        #expect(usageError("--stats=yes") == "'--stats' is a flag and takes no value")
        #expect(usageError("--vcpus", "two") == "--vcpus: 'two' is not a whole number")
        #expect(usageError("--memory", "2X")?.hasPrefix("--memory: memory size '2X'") == true)
        #expect(usageError("--memory", "0M") != nil)
        #expect(usageError("--memory", "99999999999G") != nil)
        #expect(usageError("--console", "tty")?.hasPrefix("--console: console 'tty'") == true)
        #expect(usageError("--console", "file:")?.hasPrefix("--console:") == true)
        #expect(usageError("--kernel-unpack", "qemu") == "--kernel-unpack: 'qemu' is not one of host, guest")
        #expect(usageError("--vfio-backend", "vfio") == "--vfio-backend: 'vfio' is not one of auto, iommufd, type1")
        #expect(usageError("--kernel-cache", "rel/dir") == "--kernel-cache: 'rel/dir' is not an absolute directory path or off")
    }

    @Test("argv over the file: options override, --kernel may replace the file's kernel key")
    func effective() throws {
        let path = try tempFile("cfg.json", Array(#"{"kernel": "/fk", "memory": 1024, "vcpus": 4, "hugePages": true}"#.utf8))
        defer { unlink(path) }
        let c = try parse("--config", path, "--vcpus", "2", "--initrd", "/i").effectiveConfig()
        #expect(c == VMConfig(kernel: "/fk", initramfs: "/i", memory: 1 << 30, vcpus: 2, hugePages: true))
        #expect(try parse("--config", path, "--kernel", "/k").effectiveConfig().kernel == "/k")
        let noKernel = try tempFile("cfg-nokernel.json", Array(#"{"memory": "256M"}"#.utf8))
        defer { unlink(noKernel) }
        #expect(try parse("--config", noKernel, "--kernel", "/k").effectiveConfig() == VMConfig(kernel: "/k", memory: 256 << 20))
        #expect(throws: VMMArguments.UsageError.self) { try parse("--config", noKernel).effectiveConfig() }
        #expect(try parse("--kernel", "/k").effectiveConfig() == VMConfig(kernel: "/k"))
        #expect(throws: VMMArguments.UsageError("give --kernel BZIMAGE (or --config FILE)")) { try parse("--vcpus", "1").effectiveConfig() }
        let missing = #expect(throws: VMMArguments.UsageError.self) { try parse("--config", "/nonexistent/vm.json").effectiveConfig() }
        #expect(missing?.message == "cannot open the configuration file /nonexistent/vm.json: no such file")
    }

    @Test("--vfio and \"vfio\": strict PCI addresses, repeatable, added to the file's list, checked for repeats")
    func vfio() throws {
        let a = try parse("--kernel", "/k", "--vfio", "0000:01:00.1", "--vfio=0000:01:00.2")
        #expect(a.vfio == ["0000:01:00.1", "0000:01:00.2"])
        for bad in ["01:00.1", "0000:01:00.8", "0000:01:20.0", "0000:01:00.1 ", "0000:0G:00.1", "0000:01:00:1", "0000:AB:00.1"] {
            #expect(usageError("--vfio", bad)?.hasPrefix("--vfio: '\(bad)' is not a PCI address") == true, "\(bad)")
        }
        let path = try tempFile("cfg-vfio.json", Array(#"{"kernel": "/k", "vfio": ["0000:01:00.1"]}"#.utf8))
        defer { unlink(path) }
        let c = try parse("--config", path, "--vfio", "0000:02:00.0", "--vfio", "0000:01:00.1").effectiveConfig()
        #expect(c.vfio == ["0000:01:00.1", "0000:02:00.0"])
        #expect(try VMConfig(json: Array(c.jsonText.utf8), file: "f") == c)
        #expect(c.jsonText.contains(#""vfio" : ["0000:01:00.1", "0000:02:00.0"]"#))
        #expect(configError(#"{"kernel":"/k","vfio":"0000:01:00.1"}"#)?.contains(#"key "vfio" must be an array of PCI addresses, not a string"#) == true)
        #expect(configError(#"{"kernel":"/k","vfio":[1]}"#)?.contains("every entry must be a PCI address string") == true)
        var twice = VMConfig(kernel: "/k"); twice.vfio = ["0000:01:00.1", "0000:01:00.1"]
        #expect(throws: VMMError(.badConfiguration, "0000:01:00.1 is given twice to pass through")) { try twice.validate() }
        var malformed = VMConfig(kernel: "/k"); malformed.vfio = ["1:0.0"]
        #expect((try? malformed.validate()) == nil)
    }

    // MARK: JSON configuration

    @Test("config file: every key, defaults, initrd as another name, the printed form reads back")
    func configKeys() throws {
        let json = #"{"kernel": "/boot/vmlinuz", "initramfs": "/i.cpio", "cmdline": "console=ttyS0 reboot=k", "memory": "2G", "vcpus": 2, "console": "file:/var/log/vm.log", "hugePages": true}"#
        let c = try VMConfig(json: Array(json.utf8), file: "vm.json")
        #expect(c == VMConfig(kernel: "/boot/vmlinuz", initramfs: "/i.cpio", commandLine: "console=ttyS0 reboot=k",
                              memory: 2 << 30, vcpus: 2, console: .file("/var/log/vm.log"), hugePages: true))
        #expect(try VMConfig(json: Array(#"{"kernel":"/k"}"#.utf8), file: "f") == VMConfig(kernel: "/k"))
        #expect(try VMConfig(json: Array(#" {"kernel":"/k","initrd":"/i"} "#.utf8), file: "f").initramfs == "/i")
        #expect(try VMConfig(json: Array(#"{"kernel":"/k","memory":256}"#.utf8), file: "f").memory == 256 << 20)
        #expect(try VMConfig(json: Array(#"{"kernel":"/k","console":"none"}"#.utf8), file: "f").console == VMConfig.ConsoleTarget.none)
        #expect(try VMConfig(json: Array(#"{"kernel":"/file"}"#.utf8), file: "f", kernel: "/cli").kernel == "/file")
        // --print-config: sorted, two-space indented, slashes as they are, reads back to the same value.
        let odd = VMConfig(kernel: "/k\"\\\n\u{1}é", initramfs: "/i", memory: (256 << 20) + 4096, vcpus: 3, console: .none)
        #expect(try VMConfig(json: Array(odd.jsonText.utf8), file: "f") == odd)
        #expect(try VMConfig(json: Array(c.jsonText.utf8), file: "f") == c)
        #expect(VMConfig(kernel: "/k").jsonText == """
        {
          "cmdline" : "console=ttyS0 reboot=k panic=-1",
          "console" : "stdout",
          "hugePages" : false,
          "kernel" : "/k",
          "kernelUnpack" : "host",
          "memory" : "512M",
          "vcpus" : 1
        }
        """)
        // Kernel unpacking: who, and where the cache is; both read back.
        var unpack = try VMConfig(json: Array(#"{"kernel":"/k","kernelUnpack":"guest","kernelCache":"/var/tmp/kc"}"#.utf8), file: "f")
        #expect(unpack.kernelUnpack == .guest && unpack.kernelCache == "/var/tmp/kc")
        #expect(try VMConfig(json: Array(unpack.jsonText.utf8), file: "f") == unpack)
        unpack.kernelCache = "off"
        #expect(try JSONDecoder().decode(VMConfig.self, from: Data(unpack.jsonText.utf8)) == unpack)
        #expect(configError(#"{"kernel":"/k","kernelUnpack":"qemu"}"#)?.contains(#"key "kernelUnpack" must be "host" or "guest", not "qemu""#) == true)
        // The VFIO backend: read, printed only when not auto, read back by both decoders.
        let backend = try VMConfig(json: Array(#"{"kernel":"/k","vfio":["0000:01:00.1"],"vfioBackend":"iommufd"}"#.utf8), file: "f")
        #expect(backend.vfioBackend == .iommufd && backend.jsonText.contains(#""vfioBackend" : "iommufd""#))
        #expect(try VMConfig(json: Array(backend.jsonText.utf8), file: "f") == backend)
        #expect(try JSONDecoder().decode(VMConfig.self, from: Data(backend.jsonText.utf8)) == backend)
        #expect(!unpack.jsonText.contains("vfioBackend"))
        #expect(configError(#"{"kernel":"/k","vfioBackend":"vfio"}"#)?.contains(#"key "vfioBackend" must be "auto", "iommufd" or "type1", not "vfio""#) == true)
        #expect(throws: VMMError.self) { try VMConfig(json: Array(#"{"kernel":"/k","kernelCache":"relative/dir"}"#.utf8), file: "f").validate() }
        // The same text Foundation's encoder would have produced (and the Codable path agrees).
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        #expect(String(decoding: try e.encode(c), as: UTF8.self) == c.jsonText)
        #expect(try JSONDecoder().decode(VMConfig.self, from: Data(odd.jsonText.utf8)) == odd)
    }

    @Test("config file: unknown keys, wrong types, repeats and bad values are refused, naming file and key")
    func configRejects() {
        #expect(configError(#"{"kernel":"/k","bogus":1}"#) == #"configuration file vm.json: unknown key "bogus" (the keys are kernel, initramfs, initrd, cmdline, memory, vcpus, console, hugePages, vfio, kernelUnpack, kernelCache, vfioBackend)"#)
        #expect(configError(#"{"kernel":"/k","HugePages":true}"#)?.contains(#"unknown key "HugePages""#) == true)
        #expect(configError(#"{"kernel":"/k","vcpus":"2"}"#) == #"configuration file vm.json: key "vcpus" must be a whole number, not a string"#)
        #expect(configError(#"{"kernel":"/k","vcpus":2.0}"#)?.contains(#"key "vcpus" must be a whole number, not a number (2.0)"#) == true)
        #expect(configError(#"{"kernel":"/k","vcpus":1e1}"#)?.contains(#"key "vcpus""#) == true)
        #expect(configError(#"{"kernel":"/k","vcpus":99999999999999999999}"#)?.contains(#"key "vcpus""#) == true)
        #expect(configError(#"{"kernel":7}"#) == #"configuration file vm.json: key "kernel" must be a string, not a number (7)"#)
        #expect(configError(#"{"kernel":null}"#)?.contains(#"key "kernel" must be a string, not null"#) == true)
        #expect(configError(#"{"kernel":"/k","initramfs":["/i"]}"#)?.contains(#"key "initramfs" must be a string, not an array"#) == true)
        #expect(configError(#"{"kernel":"/k","hugePages":"yes"}"#)?.contains(#"key "hugePages" must be true or false, not a string"#) == true)
        #expect(configError(#"{"kernel":"/k","memory":"lots"}"#)?.contains(#"key "memory": memory size 'lots'"#) == true)
        #expect(configError(#"{"kernel":"/k","memory":-1}"#)?.contains(#"key "memory" must be a size"#) == true)
        #expect(configError(#"{"kernel":"/k","memory":0}"#)?.contains(#"key "memory""#) == true)
        #expect(configError(#"{"kernel":"/k","memory":true}"#)?.contains(#"key "memory" must be a size"#) == true)
        #expect(configError(#"{"kernel":"/k","console":"tty"}"#)?.contains(#"key "console": console 'tty'"#) == true)
        #expect(configError(#"{"kernel":"/k","kernel":"/k2"}"#) == #"configuration file vm.json: key "kernel" appears twice"#)
        #expect(configError(#"{"kernel":"/k","initrd":"/a","initramfs":"/b"}"#)?.contains("give the initramfs once") == true)
        #expect(configError(#"{"memory":"1G"}"#) == #"configuration file vm.json: missing key "kernel" (the bzImage to boot), and no --kernel given"#)
        #expect(configError(#"["/k"]"#) == "configuration file vm.json: expected a JSON object ({\"kernel\": …}), found an array")
        #expect(configError(#""/k""#)?.contains("expected a JSON object") == true)
    }

    @Test("config file: syntax errors say where; no trailing garbage, commas or comments")
    func configSyntax() {
        #expect(configError(#"{"kernel":"/k"} x"#) == "configuration file vm.json: not valid JSON: line 1, column 17: unexpected 'x' after the JSON value")
        #expect(configError(#"{"kernel":"/k"}{}"#)?.contains("unexpected '{' after the JSON value") == true)
        #expect(configError("{\"kernel\":\"/k\",\n \"vcpus\":2,}") == "configuration file vm.json: not valid JSON: line 2, column 12: expected a member name in double quotes, found '}'")
        #expect(configError("{\"kernel\":\"/k\" // boot\n}")?.contains("line 1, column 16: expected ',' or '}' after the value of \"kernel\"") == true)
        #expect(configError(#"{kernel:"/k"}"#)?.contains("expected a member name in double quotes, found 'k'") == true)
        #expect(configError(#"{'kernel':'/k'}"#) != nil)
        #expect(configError(#"{"kernel" "/k"}"#)?.contains("expected ':' after the member name \"kernel\"") == true)
        #expect(configError(#"{"kernel":"/k""#)?.contains("found end of file") == true)
        #expect(configError(#"{"kernel":"/k"#)?.contains("line 1, column 11: unterminated string") == true)
        #expect(configError("")?.contains("expected a value, found end of file") == true)
        #expect(configError("   \n ") != nil)
        #expect(configError("\u{FEFF}{\"kernel\":\"/k\"}") != nil)
    }

    @Test("strict JSON: the grammar of RFC 8259, exactly")
    func strictJSON() throws {
        func ok(_ s: String) -> JSONValue? { try? StrictJSON.parse(Array(s.utf8)) }
        func bad(_ s: String) -> Bool { (try? StrictJSON.parse(Array(s.utf8))) == nil }
        #expect(ok(#"{"a":[1,-0.5,2e10,-3E-2,true,false,null,"x"],"b":{}}"#) == .object([
            JSONMember(key: "a", value: .array([.number("1"), .number("-0.5"), .number("2e10"), .number("-3E-2"), .bool(true), .bool(false), .null, .string("x")])),
            JSONMember(key: "b", value: .object([])),
        ]))
        #expect(ok(" [ ] ") == .array([]))
        #expect(ok("0") == .number("0") && ok("0")?.integerValue == 0)
        #expect(ok("-12")?.integerValue == -12 && ok("1.0")?.integerValue == nil && ok("1e2")?.integerValue == nil)
        #expect(ok(#""a\"b\\c\/d\b\f\n\r\t\u0041\u00e9\u20AC\uD83D\uDE00""#) == .string("a\"b\\c/d\u{8}\u{C}\n\r\tAé€😀"))
        #expect(ok("\"é€😀\"") == .string("é€😀"))
        for s in ["01", "-", "1.", ".5", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "tru", "nul", "True",
                  "[1,]", "[,1]", "[1 2]", "{\"a\":1,}", "{\"a\"}", "{,}", "[", "]", "{\"a\":1", "\"\\x\"", "\"\\u12\"",
                  "\"\\uD800\"", "\"\\uDC00\"", "\"\\uD800\\u0041\"", "\"a\u{1}b\"", "\"a\nb\"", "1 2", "[] []", "/* */ 1"] {
            #expect(bad(s), "\(s) must be refused")
        }
        #expect((try? StrictJSON.parse([0x22, 0xC3, 0x28, 0x22])) == nil) // invalid UTF-8
        #expect((try? StrictJSON.parse([0x22, 0xFF, 0x22])) == nil)
        let deep = String(repeating: "[", count: StrictJSON.maximumDepth) + String(repeating: "]", count: StrictJSON.maximumDepth)
        #expect(ok(deep) != nil)
        #expect(bad("[" + deep + "]"))
        #expect(bad(String(repeating: "[", count: 100_000)))
        #expect(StrictJSON.quote("a\"\\/\n\u{1}\u{1F}é") == #""a\"\\/\n\u0001\u001fé""#)
    }

    @Test("strict JSON: random mutations of a good file never crash and never pass with garbage")
    func fuzz() {
        let good = Array(#"{"kernel": "/boot/vmlinuz", "initramfs": "/i", "memory": "512M", "vcpus": 2, "hugePages": false}"#.utf8)
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("{}[]\":,\\ 0123456789-+.eEtrufalsn\u{1}".utf8) + [0xC3, 0xFF]
        for _ in 0..<2000 {
            var b = good
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<b.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: b[i] = alphabet.randomElement(using: &rng)!
                case 1: b.remove(at: i)
                default: b.insert(alphabet.randomElement(using: &rng)!, at: i)
                }
                if b.isEmpty { break }
            }
            // Whatever it decides, Foundation's parser must not accept what this one refuses as garbage.
            if (try? StrictJSON.parse(b)) != nil {
                #expect((try? JSONSerialization.jsonObject(with: Data(b), options: [.fragmentsAllowed])) != nil,
                        "accepted \(String(decoding: b, as: UTF8.self))")
            }
            _ = try? VMConfig(json: b, file: "fuzz.json")
        }
    }
}
