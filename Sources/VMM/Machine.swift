import CLinux
import KVM
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One x86-64 virtual machine booting Linux directly at its 64-bit entry point: KVM with the
/// in-kernel irqchip and PIT, guest RAM, the kernel, initramfs and boot structures loaded, a
/// COM1 UART, the i8042 (reset), a PCI host bridge with the passed-through devices behind it,
/// and one thread per vCPU.
public final class Machine: @unchecked Sendable {
    public let config: VMConfig
    public let kvm: KVMSystem
    public let vm: KVMVirtualMachine
    public let memory: GuestMemory
    /// Serializes every device access (I/O ports, trapped MMIO, PCI configuration).
    let deviceLock = Lock()
    public let io: IOBus
    public let mmio: MMIOBus
    let bridge = PCIHostBridge()
    /// The devices passed through (VFIO), if any.
    let passthrough: PassthroughSet?
    public let loaded: LinuxLoader.Loaded
    let console: Console
    let serial: Serial8250
    let serialIRQ: EventFD
    let ioDelay: EventFD
    let control = MachineControl()
    /// When the vCPUs started and the guest first wrote to the console.
    public let timeline = MachineTimeline()
    let vcpus: [KVMVirtualCPU]

    /// Builds the machine; nothing runs until `run()`.
    public init(config: VMConfig) throws(VMMError) {
        try config.validate()
        self.config = config
        io = IOBus(lock: deviceLock)
        mmio = MMIOBus(lock: deviceLock)
        do {
            kvm = try KVMSystem()
            try kvm.require(KVMCapability.forLinuxGuest)
            let maxVCPUs = kvm.check(.maxVCPUs)
            guard maxVCPUs == 0 || config.vcpus <= maxVCPUs else {
                throw VMMError(.badConfiguration, "this KVM runs at most \(maxVCPUs) vCPUs per VM, not \(config.vcpus)")
            }
            vm = try kvm.createVM()
            try vm.setTSSAddress(BootLayout.tss)
            try? vm.setIdentityMapAddress(BootLayout.identityMap)
            try vm.createIRQChip()
            try vm.createPIT2()
        } catch let e as KVMError { throw VMMError(e) } catch let e as VMMError { throw e } catch { throw VMMError(.kvm, "\(error)") }

        memory = try GuestMemory(size: config.memory, hugePages: config.hugePages)
        do { try memory.register(with: vm) } catch { throw VMMError(error) }
        loaded = try LinuxLoader.load(kernel: config.kernel, initramfs: config.initramfs, commandLine: config.commandLine,
                                      cpus: config.vcpus, pciRoot: !config.vfio.isEmpty, unpack: config.kernelUnpack,
                                      cache: KernelCache.resolve(config.kernelCache), into: memory)
        for n in loaded.notes { Self.note(n) }
        // The loader's temporaries (an unpacked kernel's relocation table: ~600 KiB of arrays)
        // are freed; without this glibc keeps them as resident heap for the VM's whole life.
        passage_malloc_trim()
        try X86CPUSetup.writeBootTables(memory)

        switch config.console {
        case .stdout: console = .standardOutput()
        case .none: console = .none()
        case .file(let path): console = try .file(path)
        }
        do {
            serialIRQ = try EventFD()
            try vm.registerIRQFD(serialIRQ, gsi: Serial8250.com1IRQ)
            // Port 0x80 (the POST port Linux writes for I/O delays): swallowed in the kernel.
            ioDelay = try EventFD()
            try vm.registerIOEventFD(ioDelay, space: .port, address: 0x80, length: 1)
        } catch { throw VMMError(error) }
        let irq = serialIRQ, console = console, control = control, timeline = timeline
        serial = Serial8250(output: { timeline.markConsoleByte(); console.put($0) }, interrupt: { try? irq.signal() })
        io.register(serial, base: Serial8250.com1Base, count: 8)
        io.register(I8042(reset: { control.stop(.reset) }), base: I8042.basePort, count: I8042.portCount)
        io.register(bridge, base: PCIHostBridge.addressPort, count: 8)
        if config.vfio.isEmpty {
            passthrough = nil
        } else {
            let slots = MemorySlots(limit: kvm.check(.memorySlots))
            passthrough = try PassthroughSet(addresses: config.vfio, backend: config.vfioBackend, vm: vm, memory: memory, bridge: bridge, io: io, mmio: mmio,
                                             routes: InterruptRoutes(vm: vm), slots: slots,
                                             report: { Machine.warn($0) })
        }
        io.register(ACPIPowerDevice(powerOff: { control.stop(.poweroff) }, reset: { control.stop(.reset) }),
                    base: ACPITables.powerPort, count: 1)

        do {
            let template = CPUIDTemplate(supported: try kvm.supportedCPUID(), tscDeadline: kvm.check(.tscDeadlineTimer) != 0)
            var vcpus: [KVMVirtualCPU] = []
            for i in 0..<config.vcpus {
                let vcpu = try vm.createVCPU(id: UInt32(i))
                try vcpu.setCPUID(template.entries(for: i, of: config.vcpus))
                try X86CPUSetup.setBootMSRs(vcpu)
                try X86CPUSetup.setLocalInterrupts(vcpu)
                if i == 0 { try X86CPUSetup.setBootRegisters(vcpu, entry: loaded.entryPoint, bootParams: loaded.bootParams) }
                vcpus.append(vcpu)
            }
            self.vcpus = vcpus
        } catch { throw VMMError(error) }
    }

    /// Runs the guest until it powers off, resets or crashes, or SIGINT/SIGTERM arrives.
    /// Blocks the calling thread (which handles those signals) and returns how the VM ended.
    /// With `sandbox`, every thread — the calling one too, once the others are started — runs
    /// under its seccomp filter (`VMMSeccomp`): only for a process that is nothing but this VM.
    public func run(sandbox: Bool = false) throws(VMMError) -> MachineExit {
        // The calling thread takes SIGINT, SIGTERM and the stop notice (SIGUSR1) with sigwait;
        // threads created from here inherit the mask, so no other thread is chosen for them.
        var waitSet = sigset_t()
        sigemptyset(&waitSet)
        for s in [SIGINT, SIGTERM, SIGUSR1] { sigaddset(&waitSet, s) }
        var oldMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &waitSet, &oldMask)
        defer { pthread_sigmask(SIG_SETMASK, &oldMask, nil) }
        VCPUThread.installKickHandler()

        let me = pthread_self()
        control.onStop = { pthread_kill(me, SIGUSR1) }
        let exits = ExitHandler(io: io, mmio: mmio)
        let threads = vcpus.map { VCPUThread(vcpu: $0, machine: control, exits: exits, sandbox: sandbox) }
        control.threads = threads
        let terminal = ConsoleInput.start(config: config, serial: serial, io: io, control: control, sandbox: sandbox)
        defer { terminal?.restore() }
        timeline.markStarted()
        for t in threads {
            do { try t.start() } catch {
                control.stop(.crashed(error.message))
                break
            }
        }
        if sandbox && control.exit == nil {
            do { try VMMSeccomp.install(.main) } catch { control.stop(.failed(error.message)) }
        }
        // Set-up is over: the code only it ran (argument parsing, kernel unpacking, VFIO set-up)
        // need not stay mapped; what the VM runs from now on faults back in from the page cache.
        _ = passage_drop_code_pages()
        while control.exit == nil {
            var sig: Int32 = 0
            guard sigwait(&waitSet, &sig) == 0 else { continue }
            switch sig {
            case SIGINT: control.stop(.stopped("SIGINT"))
            case SIGTERM: control.stop(.stopped("SIGTERM"))
            default: break
            }
        }
        for t in threads { t.join() }
        // Drain the stop notice still pending when the stop came from this thread's own sigwait.
        var notice = sigset_t()
        sigemptyset(&notice)
        sigaddset(&notice, SIGUSR1)
        var zero = timespec()
        while sigtimedwait(&notice, nil, &zero) == SIGUSR1 {}
        console.flush()
        return control.exit!
    }

    /// Passthrough set-up time and its DMA-mapping part, in nanoseconds, and the VFIO backend
    /// used (nil without devices).
    public var passthroughTimes: (setup: Int64, dmaMap: Int64, backend: VFIOBackend)? {
        passthrough.map { ($0.setupNanoseconds, $0.dmaMapNanoseconds, $0.backend) }
    }

    /// A line for the operator on stderr (passage-vmm's log under the daemon) that is no warning.
    static func note(_ message: String) {
        let line = Array("passage-vmm: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// A warning on standard error (the VM goes on).
    static func warn(_ message: String) { note("warning: \(message)") }

    /// Resident memory of this process and the part of it that is guest RAM the guest touched.
    public func memoryUsage() -> (processResident: Int, guestResident: Int) {
        var rss = 0
        let fd = open("/proc/self/statm", O_RDONLY)
        if fd >= 0 {
            var buf = [UInt8](repeating: 0, count: 128)
            let n = read(fd, &buf, 127)
            close(fd)
            if n > 0 {
                let fields = String(decoding: buf[0..<n], as: UTF8.self).split(separator: " ")
                if fields.count > 1, let pages = Int(fields[1]) { rss = pages * Int(sysconf(Int32(_SC_PAGESIZE))) }
            }
        }
        return (rss, memory.mapping.residentBytes())
    }
}
