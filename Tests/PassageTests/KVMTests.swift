import Foundation
import KVM
import Testing

/// A real-mode guest on the machine's own /dev/kvm: 64 KiB of RAM at guest-physical 0, code at
/// 0x1000, CS:IP = 0000:1000.
final class TinyGuest {
    static let codeAddress = 0x1000
    let system: KVMSystem
    let vm: KVMVirtualMachine
    let memory: AnonymousMemory
    var vcpus: [KVMVirtualCPU] = []

    init(code: [UInt8], irqchip: Bool = false, vcpus count: Int = 1) throws {
        system = try KVMSystem()
        vm = try system.createVM()
        memory = try AnonymousMemory(size: 0x10000)
        try vm.setTSSAddress(0xFFFB_D000)
        try vm.setMemoryRegion(slot: 0, guestAddress: 0, size: UInt64(memory.size), host: memory.pointer)
        if irqchip { try vm.createIRQChip() }
        memory.write(code, at: Self.codeAddress)
        for i in 0..<count {
            let vcpu = try vm.createVCPU(id: UInt32(i))
            var s = try vcpu.specialRegisters()
            s.cs.base = 0
            s.cs.selector = 0
            try vcpu.setSpecialRegisters(s)
            var r = try vcpu.registers()
            r.rip = UInt64(Self.codeAddress)
            r.rflags = 2
            r.rax = UInt64(i)
            try vcpu.setRegisters(r)
            vcpus.append(vcpu)
        }
    }

    var vcpu: KVMVirtualCPU { vcpus[0] }
}

/// The next exit that is not a kick.
func nextExit(_ vcpu: KVMVirtualCPU) throws -> KVMExit {
    while true {
        let exit = try vcpu.runOnce()
        if case .interrupted = exit { continue }
        return exit
    }
}

func expectOut(_ exit: KVMExit, port: UInt16, size: Int, value: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
    guard case let .portOut(p, s, c, data) = exit else {
        Issue.record("expected out to 0x\(String(port, radix: 16)), got \(exit)", sourceLocation: sourceLocation)
        return
    }
    #expect(p == port, sourceLocation: sourceLocation)
    #expect(s == size, sourceLocation: sourceLocation)
    #expect(c == 1, sourceLocation: sourceLocation)
    #expect(data.littleEndianValue == value, sourceLocation: sourceLocation)
}

@Suite("KVM on /dev/kvm", .serialized)
struct KVMTests {
    @Test("system fd: API 12, the capabilities a Linux guest needs, supported CPUID")
    func system() throws {
        let kvm = try KVMSystem()
        try kvm.require(KVMCapability.forLinuxGuest)
        #expect(kvm.vcpuMmapSize >= 4096)
        #expect(kvm.check(.maxVCPUs) >= 2)
        let cpuid = try kvm.supportedCPUID()
        #expect(cpuid.contains { $0.function == 0 })
        #expect(cpuid.contains { $0.function == 1 })
        #expect(!(try kvm.msrIndexList()).isEmpty)
    }

    @Test("port I/O out/in with values, ioeventfd without an exit, HLT")
    func portIO() throws {
        let code: [UInt8] = [
            0xB0, 0x42,             // mov al, 0x42
            0xE6, 0x50,             // out 0x50, al   (ioeventfd: no exit)
            0xE6, 0x10,             // out 0x10, al
            0xB8, 0x34, 0x12,       // mov ax, 0x1234
            0xBA, 0xF8, 0x03,       // mov dx, 0x3f8
            0xEF,                   // out dx, ax
            0xE4, 0x61,             // in al, 0x61
            0xE6, 0x10,             // out 0x10, al
            0xF4,                   // hlt
        ]
        let g = try TinyGuest(code: code)
        let doorbell = try EventFD()
        try g.vm.registerIOEventFD(doorbell, space: .port, address: 0x50, length: 1)
        expectOut(try nextExit(g.vcpu), port: 0x10, size: 1, value: 0x42)
        #expect(doorbell.consume() == 1)
        expectOut(try nextExit(g.vcpu), port: 0x3F8, size: 2, value: 0x1234)
        guard case let .portIn(port, size, _, data) = try nextExit(g.vcpu) else { Issue.record("expected in"); return }
        #expect(port == 0x61 && size == 1)
        data.storeLittleEndian(0x5A)
        expectOut(try nextExit(g.vcpu), port: 0x10, size: 1, value: 0x5A)
        guard case .halt = try nextExit(g.vcpu) else { Issue.record("expected hlt"); return }
    }

    @Test("MMIO: a write and a read at an address with no memory")
    func mmio() throws {
        let code: [UInt8] = [
            0xB8, 0x00, 0x20,             // mov ax, 0x2000
            0x8E, 0xD8,                   // mov ds, ax
            0xC6, 0x06, 0x10, 0x00, 0x77, // mov byte [0x10], 0x77   → 0x20010
            0xA0, 0x20, 0x00,             // mov al, [0x20]          → 0x20020
            0xE6, 0x10,                   // out 0x10, al
            0xF4,
        ]
        let g = try TinyGuest(code: code)
        guard case let .mmioWrite(address, data) = try nextExit(g.vcpu) else { Issue.record("expected an MMIO write"); return }
        #expect(address == 0x20010)
        #expect(data.count == 1 && data.littleEndianValue == 0x77)
        guard case let .mmioRead(raddress, rdata) = try nextExit(g.vcpu) else { Issue.record("expected an MMIO read"); return }
        #expect(raddress == 0x20020 && rdata.count == 1)
        rdata.storeLittleEndian(0x33)
        expectOut(try nextExit(g.vcpu), port: 0x10, size: 1, value: 0x33)
    }

    /// Real-mode code that programs the PIC (vectors 0x20…, only `irq` unmasked), says ready on
    /// port 0x10 and halts with interrupts on, in a loop.
    static func picGuest(irq: Int) -> [UInt8] {
        [0xFA,                                          // cli
         0xB0, 0x11, 0xE6, 0x20,                        // ICW1
         0xB0, 0x20, 0xE6, 0x21,                        // ICW2: vectors 0x20…
         0xB0, 0x04, 0xE6, 0x21,                        // ICW3
         0xB0, 0x01, 0xE6, 0x21,                        // ICW4
         0xB0, ~UInt8(1 << irq), 0xE6, 0x21,            // OCW1: unmask `irq` only
         0xB0, 0x01, 0xE6, 0x10,                        // out 0x10, 1: ready
         0xFB,                                          // sti
         0xF4,                                          // loop: hlt
         0xEB, 0xFD]                                    // jmp loop
    }

    @Test("interrupts into IVT handlers: irqfd through the PIC, irqfd on an MSI route, KVM_SIGNAL_MSI")
    func interrupts() throws {
        let code = Self.picGuest(irq: 4)
        let g = try TinyGuest(code: code, irqchip: true)
        // Handlers: out 0x11, <tag>; EOI to the PIC; iret. IVT entries written by the host.
        for (i, (vector, tag)) in [(0x24, 0x99), (0x34, 0xA1), (0x44, 0xB2)].enumerated() {
            let handler = 0x1100 + 0x10 * i
            g.memory.write([0xB0, UInt8(tag), 0xE6, 0x11, 0xB0, 0x20, 0xE6, 0x20, 0xCF], at: handler)
            g.memory.write([UInt8(handler & 0xFF), UInt8(handler >> 8), 0, 0], at: vector * 4)
        }
        // LINT0 as ExtINT (the PIC's way in), APIC software-enabled for fixed MSIs.
        var lapic = try g.vcpu.lapic()
        lapic.setDeliveryMode(.lvtLINT0, .extINT)
        lapic[.spurious] = 0x1FF
        try g.vcpu.setLAPIC(lapic)
        #expect(try g.vcpu.lapic()[.lvtLINT0] & 0x700 == 0x700)
        // GSI 24 as an MSI to APIC 0, vector 0x34, on top of the default routes.
        try g.vm.setGSIRouting(GSIRoute.defaultRouting() + [.msi(gsi: 24, address: 0xFEE0_0000, data: 0x34)])

        expectOut(try nextExit(g.vcpu), port: 0x10, size: 1, value: 1)
        let irq4 = try EventFD(), msi = try EventFD()
        try g.vm.registerIRQFD(irq4, gsi: 4)
        try g.vm.registerIRQFD(msi, gsi: 24)
        try irq4.signal()
        expectOut(try nextExit(g.vcpu), port: 0x11, size: 1, value: 0x99)
        try msi.signal()
        expectOut(try nextExit(g.vcpu), port: 0x11, size: 1, value: 0xA1)
        #expect(try g.vm.signalMSI(address: 0xFEE0_0000, data: 0x44))
        expectOut(try nextExit(g.vcpu), port: 0x11, size: 1, value: 0xB2)
        try g.vm.unregisterIRQFD(irq4, gsi: 4)
    }

    @Test("a resampling irqfd (passthrough INTx): the line stays up until the guest's EOI, which signals the resample eventfd")
    func resamplingIRQFD() throws {
        let code = Self.picGuest(irq: 5)
        let g = try TinyGuest(code: code, irqchip: true)
        // Handler of vector 0x25: out 0x11, 0x55; EOI to the PIC; out 0x12, 1 (the EOI is done); iret.
        g.memory.write([0xB0, 0x55, 0xE6, 0x11, 0xB0, 0x20, 0xE6, 0x20, 0xB0, 0x01, 0xE6, 0x12, 0xCF], at: 0x1100)
        g.memory.write([0x00, 0x11, 0, 0], at: 0x25 * 4)
        var lapic = try g.vcpu.lapic()
        lapic.setDeliveryMode(.lvtLINT0, .extINT)
        lapic[.spurious] = 0x1FF
        try g.vcpu.setLAPIC(lapic)
        expectOut(try nextExit(g.vcpu), port: 0x10, size: 1, value: 1)

        let trigger = try EventFD(), resample = try EventFD()
        func readable(_ e: EventFD) -> Bool {
            var p = pollfd(fd: e.fd, events: Int16(POLLIN), revents: 0)
            return poll(&p, 1, 0) == 1
        }
        try g.vm.registerIRQFD(trigger, gsi: 5, resample: resample)
        for round in 1...3 {
            try trigger.signal()
            expectOut(try nextExit(g.vcpu), port: 0x11, size: 1, value: 0x55)
            #expect(!readable(resample), "round \(round): before the EOI the line is still up")
            expectOut(try nextExit(g.vcpu), port: 0x12, size: 1, value: 1)
            #expect(readable(resample), "round \(round): the EOI lowered the line and signalled the resample eventfd")
            var count: UInt64 = 0
            _ = read(resample.fd, &count, 8)
        }
        try g.vm.unregisterIRQFD(trigger, gsi: 5)
    }

    @Test("several vCPUs start, each on its own thread; a kick by immediate_exit")
    func multipleVCPUs() throws {
        let g = try TinyGuest(code: [0xE6, 0x10, 0xF4], vcpus: 3) // out 0x10, al; hlt
        let results = Results()
        let done = DispatchGroup()
        for vcpu in g.vcpus {
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                if case let .portOut(port, _, _, data) = try? nextExit(vcpu), port == 0x10 {
                    results.add(vcpu.id, data.littleEndianValue)
                }
            }
        }
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(results.values == [0: 0, 1: 1, 2: 2])
        // A vCPU told to exit immediately comes back with .interrupted and leaves the guest alone.
        g.vcpu.immediateExit = true
        guard case .interrupted = try g.vcpu.runOnce() else { Issue.record("expected .interrupted"); return }
        g.vcpu.immediateExit = false
        guard case .halt = try g.vcpu.runOnce() else { Issue.record("expected hlt"); return }
    }

    @Test("memory slots: bad slot number, overlap, misalignment are typed errors")
    func memorySlotErrors() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        let mem = try AnonymousMemory(size: 0x20000)
        try vm.setMemoryRegion(slot: 0, guestAddress: 0, size: 0x10000, host: mem.pointer)
        let overlap = #expect(throws: KVMError.self) {
            try vm.setMemoryRegion(slot: 1, guestAddress: 0x8000, size: 0x10000, host: mem.pointer + 0x10000)
        }
        #expect(overlap?.code == .invalidMemoryRegion)
        #expect(overlap?.message.contains("overlaps") == true)
        let badSlot = #expect(throws: KVMError.self) {
            try vm.setMemoryRegion(slot: 60000, guestAddress: 0x100000, size: 0x10000, host: mem.pointer + 0x10000)
        }
        #expect(badSlot?.code == .invalidMemoryRegion)
        #expect(badSlot?.message.contains("slot 60000") == true)
        let misaligned = #expect(throws: KVMError.self) {
            try vm.setMemoryRegion(slot: 2, guestAddress: 0x100123, size: 0x1000, host: mem.pointer + 0x10000)
        }
        #expect(misaligned?.code == .invalidMemoryRegion)
        // Deleting and re-adding a slot works.
        try vm.setMemoryRegion(slot: 0, guestAddress: 0, size: 0, host: mem.pointer)
        try vm.setMemoryRegion(slot: 1, guestAddress: 0x8000, size: 0x10000, host: mem.pointer + 0x10000)
    }

    @Test("closed descriptors, a missing /dev/kvm and an absent capability are typed errors")
    func closedAndMissing() throws {
        let missing = #expect(throws: KVMError.self) { _ = try KVMSystem(path: "/nonexistent/kvm") }
        #expect(missing?.code == .deviceMissing)
        #expect(missing?.message.contains("modprobe") == true)

        let kvm = try KVMSystem()
        let absent = #expect(throws: KVMError.self) { try kvm.require([.irqchip, KVMCapability(99999, "KVM_CAP_MADE_UP")]) }
        #expect(absent?.code == .capabilityMissing)
        #expect(absent?.message.contains("KVM_CAP_MADE_UP") == true)
        #expect(absent?.message.contains("KVM_CAP_IRQCHIP") == false)

        let g = try TinyGuest(code: [0xF4])
        g.vcpu.close()
        #expect(throws: KVMError(.closed, "KVM_RUN: vCPU 0 was closed already")) { _ = try g.vcpu.runOnce() }
        #expect { _ = try g.vcpu.registers() } throws: { ($0 as? KVMError)?.code == .closed }
        g.vm.close()
        #expect { _ = try g.vm.createVCPU(id: 5) } throws: { ($0 as? KVMError)?.code == .closed }
        kvm.close()
        #expect { _ = try kvm.createVM() } throws: { ($0 as? KVMError)?.code == .closed }
        #expect(kvm.check(.irqchip) == 0)
    }

    @Test("the KVM–VFIO device: created, and a descriptor that is not a VFIO group is refused by name")
    func vfioDevice() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        let notAGroup = try EventFD()
        let e = #expect(throws: KVMError.self) { _ = try vm.addVFIOGroups([notAGroup.fd]) }
        // This machine's KVM may lack the device (then KVM_CREATE_DEVICE fails); where it has it, the
        // group add fails (EBADF/EINVAL: an eventfd is no VFIO group).
        #expect(e?.message.hasPrefix("KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO): ") == true
                || e?.message.hasPrefix("KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE_ADD): ") == true, "\(String(describing: e))")
        let device = try? vm.addVFIOGroups([])
        if let device { #expect(device >= 0); close(device) }
    }

    @Test("a failed ioctl names itself and its errno")
    func errnoNamed() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        _ = try vm.createVCPU(id: 0)
        let e = #expect(throws: KVMError.self) { _ = try vm.createVCPU(id: 0) }
        #expect(e?.message.hasPrefix("KVM_CREATE_VCPU: ") == true)
        #expect(e?.errno == EEXIST)
        #expect(e?.message.contains("EEXIST") == true)
    }
}

final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var dict: [UInt32: UInt64] = [:]
    func add(_ k: UInt32, _ v: UInt64) { lock.lock(); dict[k] = v; lock.unlock() }
    var values: [UInt32: UInt64] { lock.lock(); defer { lock.unlock() }; return dict }
}
