import Foundation
import KVM
import Testing
@testable import VMM

func tempFile(_ name: String, _ bytes: [UInt8]) throws -> String {
    let path = NSTemporaryDirectory() + "passage-vmm-test-\(getpid())-\(name)"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

@Suite("VMM: loading, tables, devices, and whole machines on /dev/kvm", .serialized)
struct VMMMachineTests {
    @Test("guest memory: the PCI hole splits RAM above 3 GiB; e820 follows")
    func memoryLayout() throws {
        let small = try GuestMemory(size: 256 << 20)
        #expect(small.regions.count == 1)
        #expect(LinuxLoader.e820(for: small).map(\.address) == [0, 0x9FC00, 0xE_0000, 0x10_0000])
        #expect(LinuxLoader.e820(for: small).last?.size == (256 << 20) - 0x10_0000)
        let big = try GuestMemory(size: 5 << 30)
        #expect(big.regions.map(\.guestAddress) == [0, 0x1_0000_0000])
        #expect(big.regions[0].size == 0xC000_0000)
        #expect(big.regions[1].size == (5 << 30) - 0xC000_0000)
        #expect(big.pointer(0xC000_0000, count: 1) == nil)
        #expect(big.pointer(0x1_0000_0000, count: 8) == big.mapping.pointer + 0xC000_0000)
        #expect(LinuxLoader.e820(for: big).last?.address == 0x1_0000_0000)
        #expect(throws: VMMError.self) { _ = try GuestMemory(size: 1 << 20) }
        // Guest RAM starts on a 2 MiB boundary, so THP and KVM's 2 MiB mappings can back it.
        for size in [32 << 20, (256 << 20) + 4096] {
            let m = try GuestMemory(size: UInt64(size))
            #expect(Int(bitPattern: m.mapping.pointer) % (2 << 20) == 0)
            m.mapping.pointer.storeBytes(of: 1, toByteOffset: size - 1, as: UInt8.self) // the whole size is mapped
        }
        #expect(Int(bitPattern: try AnonymousMemory(size: 8192).pointer) % 4096 == 0)
    }

    @Test("MP table: checksums, pointer, one processor entry per vCPU with the BSP flagged")
    func mpTable() {
        let t = MPTable.build(cpus: 4, at: 0x9FC00)
        #expect(Array(t[0..<4]) == Array("_MP_".utf8))
        #expect(t[0..<16].reduce(0, &+) == 0)
        let pointer = UInt32(t[4]) | UInt32(t[5]) << 8 | UInt32(t[6]) << 16 | UInt32(t[7]) << 24
        #expect(pointer == 0x9FC10)
        let table = Array(t[16...])
        #expect(Array(table[0..<4]) == Array("PCMP".utf8))
        let length = Int(table[4]) | Int(table[5]) << 8
        #expect(length == table.count)
        #expect(table.reduce(0, &+) == 0)
        let cpus = stride(from: 44, to: 44 + 4 * 20, by: 20).map { table[$0] }
        #expect(cpus == [0, 0, 0, 0]) // entry type 0
        #expect(table[44 + 3] == 3 && table[64 + 3] == 1) // BSP | enabled, enabled
        #expect(t.count <= 0x400)
        #expect(MPTable.build(cpus: MPTable.maximumCPUs, at: 0x9FC00).count <= 0x400)
    }

    @Test("MP table with PCI: bus 0 is PCI, ISA moves to bus 1, each slot's INTA goes level/low to the _PRT's pin; what fits in 1 KiB")
    func mpTablePCI() {
        /// Entries after the header: (type, bytes).
        func entries(_ t: [UInt8]) -> [[UInt8]] {
            let table = Array(t[16...])
            var out: [[UInt8]] = [], at = 44
            while at < table.count {
                let size = table[at] == 0 ? 20 : 8
                out.append(Array(table[at..<at + size]))
                at += size
            }
            return out
        }
        let t = MPTable.build(cpus: 2, pciSlots: 31, at: 0x9FC00)
        #expect(t[16...].reduce(0, &+) == 0 && t[0..<16].reduce(0, &+) == 0)
        let e = entries(t)
        let count = Int(t[16 + 34]) | Int(t[16 + 35]) << 8
        #expect(count == e.count)
        let buses = e.filter { $0[0] == 1 }
        #expect(buses.map { $0[1] } == [0, 1] && buses.map { String(decoding: $0[2..<8], as: UTF8.self) } == ["PCI   ", "ISA   "])
        let ioapic = e.first { $0[0] == 2 }![1]
        let interrupts = e.filter { $0[0] == 3 }
        let isa = interrupts.filter { $0[4] == 1 }, pci = interrupts.filter { $0[4] == 0 }
        #expect(isa.count == 16 && isa.allSatisfy { $0[5] == $0[7] && $0[2] == 0 })            // ISA: identity, conforming
        #expect(pci.count == 31)
        for (i, p) in pci.enumerated() {
            let slot = i + 1
            #expect(p[2] == 0x0F && p[5] == UInt8(slot << 2) && p[6] == ioapic && p[7] == UInt8(PCIHostBridge.intxGSI(slot: slot)), "\(p)")
        }
        // Many vCPUs: as many slots as fit, the table never over 1 KiB; without PCI, ISA stays bus 0.
        let big = MPTable.build(cpus: MPTable.maximumCPUs, pciSlots: 31, at: 0x9FC00)
        let bigPCI = entries(big).filter { $0[0] == 3 && $0[4] == 0 }
        #expect(big.count <= MPTable.maximumSize && big.count > MPTable.maximumSize - 8 && bigPCI.count >= 19)
        #expect(entries(MPTable.build(cpus: 2, at: 0x9FC00)).filter { $0[0] == 1 }.map { $0[1] } == [0])
    }

    @Test("CPUID per vCPU: APIC id, logical count, hypervisor bit, x2APIC topology")
    func cpuid() throws {
        let kvm = try KVMSystem()
        let template = CPUIDTemplate(supported: try kvm.supportedCPUID(), tscDeadline: true)
        let e = template.entries(for: 2, of: 4)
        let leaf1 = try #require(e.first { $0.function == 1 })
        #expect(leaf1.ebx >> 24 == 2)
        #expect((leaf1.ebx >> 16) & 0xFF == 4)
        #expect(leaf1.ecx & (1 << 31) != 0)
        #expect(leaf1.edx & (1 << 28) != 0)
        for leaf in e where leaf.function == 0xB { #expect(leaf.edx == 2) }
        if let core = e.first(where: { $0.function == 0xB && $0.index == 1 }) { #expect(core.ebx == 4 && core.eax == 2) }
    }

    @Test("loader: zero page, command line, initramfs at the top, kernel at 1 MiB, MP table")
    func loader() throws {
        let kernel = try tempFile("k", syntheticBzImage(entryCode: [0xF4, 0xAB]))
        let initrd = try tempFile("i", Array(repeating: 0x5A, count: 10_000))
        defer { unlink(kernel); unlink(initrd) }
        let mem = try GuestMemory(size: 64 << 20)
        let l = try LinuxLoader.load(kernel: kernel, initramfs: initrd, commandLine: "console=ttyS0 hello", cpus: 2, into: mem)
        #expect(l.entryPoint == 0x10_0200)
        #expect(mem.load(UInt16.self, at: 0x10_0200) == 0xABF4)
        let bp = BootLayout.bootParams
        #expect(mem.load(UInt32.self, at: bp + 0x202) == 0x5372_6448) // "HdrS"
        #expect(mem.load(UInt8.self, at: bp + 0x210) == 0xFF)
        #expect(mem.load(UInt8.self, at: bp + 0x211)! & 0x81 == 0x81)
        #expect(mem.load(UInt32.self, at: bp + 0x228) == 0x2_0000)
        let cmd = (0..<19).map { mem.load(UInt8.self, at: 0x2_0000 + UInt64($0))! }
        #expect(String(decoding: cmd, as: UTF8.self) == "console=ttyS0 hello")
        #expect(mem.load(UInt8.self, at: 0x2_0000 + 19) == 0)
        let rd = UInt64(mem.load(UInt32.self, at: bp + 0x218)!)
        #expect(rd == l.initrdAddress && rd % 4096 == 0 && rd + 10_000 <= 64 << 20 && rd + 10_000 > (64 << 20) - 4096)
        #expect(mem.load(UInt32.self, at: bp + 0x21C) == 10_000)
        #expect(mem.load(UInt8.self, at: rd) == 0x5A)
        #expect(mem.load(UInt8.self, at: bp + 0x1E8) == 4)
        #expect(mem.load(UInt32.self, at: bp + 0x2D0 + 20 + 16) == 2) // the MP table's range is reserved
        #expect(mem.load(UInt32.self, at: 0x9FC00) == 0x5F50_4D5F) // "_MP_"
        #expect(mem.load(UInt32.self, at: bp + 0x2D0 + 40 + 16) == 2) // the ACPI tables' range too
        #expect(mem.load(UInt64.self, at: bp + 0x070) == ACPITables.base) // acpi_rsdp_addr
        #expect(mem.load(UInt64.self, at: ACPITables.base) == 0x2052_5450_2044_5352) // "RSD PTR "
    }

    @Test("loader errors: kernel too large for memory, missing initramfs, command line too long")
    func loaderErrors() throws {
        let kernel = try tempFile("k2", syntheticBzImage(initSize: 40 << 20))
        defer { unlink(kernel) }
        let mem = try GuestMemory(size: 32 << 20)
        let big = #expect(throws: VMMError.self) { _ = try LinuxLoader.load(kernel: kernel, initramfs: nil, commandLine: "", cpus: 1, into: mem) }
        #expect(big?.code == .notEnoughMemory)
        #expect(big?.message.contains("--memory") == true)
        let mem2 = try GuestMemory(size: 64 << 20)
        let missing = #expect(throws: VMMError.self) { _ = try LinuxLoader.load(kernel: kernel, initramfs: "/nonexistent/initrd", commandLine: "", cpus: 1, into: mem2) }
        #expect(missing?.code == .badInitramfs)
        #expect(missing?.message.contains("/nonexistent/initrd") == true)
        let long = #expect(throws: VMMError.self) { _ = try LinuxLoader.load(kernel: kernel, initramfs: nil, commandLine: String(repeating: "x", count: 3000), cpus: 1, into: mem2) }
        #expect(long?.code == .badConfiguration)
        let nokernel = #expect(throws: VMMError.self) { _ = try LinuxLoader.load(kernel: "/nonexistent/vmlinuz", initramfs: nil, commandLine: "", cpus: 1, into: mem2) }
        #expect(nokernel?.code == .badKernel)
    }

    @Test("UART: output, THR-empty interrupt through IIR, LSR, loopback MSR, input")
    func serial() {
        var out: [UInt8] = []
        var irqs = 0
        let s = Serial8250(output: { out.append($0) }, interrupt: { irqs += 1 })
        func w(_ o: UInt16, _ v: UInt8) { withUnsafeBytes(of: v) { s.write(offset: o, data: $0) } }
        func r(_ o: UInt16) -> UInt8 { var v: UInt8 = 0; withUnsafeMutableBytes(of: &v) { s.read(offset: o, data: $0) }; return v }
        w(0, 0x41)
        #expect(out == [0x41] && irqs == 0)
        w(1, 0x02)                        // enable THR-empty interrupt
        #expect(irqs == 1)
        #expect(r(2) & 0x0F == 0x02)      // THR empty pending, cleared by the read
        #expect(r(2) & 0x0F == 0x01)
        #expect(r(5) & 0x60 == 0x60)
        w(4, 0x1A)                        // loop | OUT2 | RTS
        #expect(r(6) & 0xF0 == 0x90)
        w(4, 0x08)
        w(1, 0x03)
        s.receive([0x62])
        #expect(r(5) & 1 == 1)
        #expect(r(2) & 0x0F == 0x04)
        #expect(r(0) == 0x62)
        #expect(r(5) & 1 == 0)
        w(3, 0x80); w(0, 0x01); w(1, 0x00); w(3, 0x03)   // divisor latch does not reach the output
        #expect(out == [0x41])
    }

    @Test("i8042: self-test answers, 0xFE resets; PCI host bridge at 00:00.0, nothing else")
    func legacyDevices() {
        var resets = 0
        let k = I8042(reset: { resets += 1 })
        func w(_ d: PortIODevice, _ o: UInt16, _ v: UInt32, size: Int = 1) { withUnsafeBytes(of: v) { d.write(offset: o, data: UnsafeRawBufferPointer(rebasing: $0.prefix(size))) } }
        func r(_ d: PortIODevice, _ o: UInt16, size: Int = 1) -> UInt32 {
            var v: UInt32 = 0
            withUnsafeMutableBytes(of: &v) { d.read(offset: o, data: UnsafeMutableRawBufferPointer(rebasing: $0.prefix(size))) }
            return v
        }
        w(k, 4, 0xAA)
        #expect(r(k, 4) & 1 == 1)
        #expect(r(k, 0) == 0x55)
        #expect(r(k, 4) & 1 == 0)
        w(k, 4, 0xFE)
        #expect(resets == 1)
        w(k, 4, 0xD1); w(k, 0, 0xFE)
        #expect(resets == 2)

        let pci = PCIHostBridge()
        w(pci, 0, 0x8000_0000, size: 4)
        #expect(r(pci, 0, size: 4) == 0x8000_0000)
        #expect(r(pci, 4, size: 4) == 0x0D57_8086)
        #expect(r(pci, 6, size: 2) == 0x0D57)
        w(pci, 0, 0x8000_0008, size: 4)
        #expect(r(pci, 7, size: 1) == 0x06)           // class: bridge
        w(pci, 0, 0x8000_0800, size: 4)               // 00:01.0
        #expect(r(pci, 4, size: 4) == 0xFFFF_FFFF)
    }

    @Test("configuration: JSON with defaults, memory sizes, console targets, range errors")
    func config() throws {
        let json = #"{"kernel": "/k", "initrd": "/i", "memory": "1G", "vcpus": 2, "console": "file:/tmp/x"}"#
        let c = try JSONDecoder().decode(VMConfig.self, from: Data(json.utf8))
        #expect(c == VMConfig(kernel: "/k", initramfs: "/i", memory: 1 << 30, vcpus: 2, console: .file("/tmp/x")))
        let round = try JSONDecoder().decode(VMConfig.self, from: JSONEncoder().encode(c))
        #expect(round == c)
        #expect(try JSONDecoder().decode(VMConfig.self, from: Data(#"{"kernel":"/k","memory":256}"#.utf8)).memory == 256 << 20)
        #expect(throws: DecodingError.self) { _ = try JSONDecoder().decode(VMConfig.self, from: Data(#"{"kernel":"/k","console":"tty"}"#.utf8)) }
        #expect(try VMConfig.parseMemory("512M") == 512 << 20)
        #expect(try VMConfig.parseMemory("262144K") == 256 << 20)
        #expect(throws: VMMError.self) { _ = try VMConfig.parseMemory("lots") }
        #expect(throws: VMMError.self) { try VMConfig(kernel: "/k", vcpus: 0).validate() }
        #expect(throws: VMMError.self) { try VMConfig(kernel: "/k", memory: 8 << 20).validate() }
    }

    @Test("a whole machine on /dev/kvm: 64-bit entry with rsi = zero page, UART output, i8042 reset ends it")
    func machineBoots() throws {
        // At the 64-bit entry: out 0x3f8 "OK\n", then the low byte of %rsi as a hex-free check
        // ('p' when rsi == 0x7000 >> 8 … simpler: print 'p' + (rsi >> 12) - 7), then reset.
        let code: [UInt8] = [
            0x66, 0xBA, 0xF8, 0x03,       // mov dx, 0x3f8
            0xB0, 0x4F, 0xEE,             // mov al, 'O'; out dx, al
            0xB0, 0x4B, 0xEE,             // mov al, 'K'; out dx, al
            0x48, 0x89, 0xF0,             // mov rax, rsi
            0x48, 0xC1, 0xE8, 0x0C,       // shr rax, 12           (0x7000 → 7)
            0x04, 0x2A,                   // add al, 0x2A          (7 → '1')
            0xEE,                         // out dx, al
            0xB0, 0x0A, 0xEE,             // mov al, '\n'; out dx, al
            0xB0, 0xFE, 0xE6, 0x64,       // mov al, 0xFE; out 0x64, al  (i8042 reset)
            0xF4, 0xEB, 0xFD,             // hlt; jmp hlt
        ]
        let kernel = try tempFile("m", syntheticBzImage(entryCode: code))
        let console = NSTemporaryDirectory() + "passage-vmm-test-\(getpid())-console"
        defer { unlink(kernel); unlink(console) }
        for vcpus in [1, 2] {
            let machine = try Machine(config: VMConfig(kernel: kernel, commandLine: "x", memory: 32 << 20, vcpus: vcpus, console: .file(console)))
            let exit = try machine.run()
            #expect(exit == .reset)
            #expect(exit.exitStatus == 0)
            #expect(try String(contentsOfFile: console, encoding: .utf8) == "OK1\n")
            let usage = machine.memoryUsage()
            #expect(usage.guestResident > 0 && usage.processResident > usage.guestResident)
        }
    }

    @Test("a machine with a bad kernel or bad settings fails with VMMError, no crash")
    func machineErrors() throws {
        let notKernel = try tempFile("nk", Array(repeating: 7, count: 5000))
        defer { unlink(notKernel) }
        let e = #expect(throws: VMMError.self) { _ = try Machine(config: VMConfig(kernel: notKernel, memory: 32 << 20)) }
        #expect(e?.code == .badKernel)
        let v = #expect(throws: VMMError.self) { _ = try Machine(config: VMConfig(kernel: notKernel, vcpus: 99)) }
        #expect(v?.code == .badConfiguration)
    }
}
