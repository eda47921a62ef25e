import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs one vCPU on its own POSIX thread until the machine stops. A stop kicks every vCPU out of
/// `KVM_RUN` with `immediate_exit` and a signal (`SIGUSR2`, whose handler does nothing), never by
/// polling.
final class VCPUThread: @unchecked Sendable {
    /// The signal that kicks a vCPU thread out of `KVM_RUN`.
    static let kickSignal = SIGUSR2

    let vcpu: KVMVirtualCPU
    let machine: MachineControl
    let exits: ExitHandler
    /// Install the vCPU seccomp filter before the first KVM_RUN.
    let sandbox: Bool
    private var thread = pthread_t()
    private var started = false

    init(vcpu: KVMVirtualCPU, machine: MachineControl, exits: ExitHandler, sandbox: Bool = false) {
        self.vcpu = vcpu
        self.machine = machine
        self.exits = exits
        self.sandbox = sandbox
    }

    /// Installs the do-nothing kick handler (no SA_RESTART, so KVM_RUN returns EINTR).
    static func installKickHandler() {
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        sigaction(kickSignal, &sa, nil)
    }

    func start() throws(VMMError) {
        let box = Unmanaged.passRetained(self).toOpaque()
        let r = pthread_create(&thread, nil, { arg in
            let me = Unmanaged<VCPUThread>.fromOpaque(arg!).takeRetainedValue()
            me.main()
            return nil
        }, box)
        guard r == 0 else {
            Unmanaged<VCPUThread>.fromOpaque(box).release()
            throw VMMError(.io, "cannot start the thread of vCPU \(vcpu.id): \(String(cString: strerror(r)))")
        }
        started = true
    }

    /// Sets `immediate_exit` and signals the thread.
    func kick() {
        vcpu.immediateExit = true
        if started { pthread_kill(thread, Self.kickSignal) }
    }

    func join() {
        if started { pthread_join(thread, nil); started = false }
    }

    private func main() {
        // Only the kick signal reaches this thread.
        var set = sigset_t()
        sigfillset(&set)
        sigdelset(&set, Self.kickSignal)
        pthread_sigmask(SIG_SETMASK, &set, nil)
        if sandbox {
            do { try VMMSeccomp.install(.vcpu) } catch {
                machine.stop(.failed(error.message))
                return
            }
        }
        while true {
            let exit: KVMExit
            do { exit = try vcpu.runOnce() } catch {
                machine.stop(.crashed(error.message))
                return
            }
            if case .interrupted = exit {
                // Clear first, then look: a stop that lands between the two leaves
                // immediate_exit set, so the next KVM_RUN returns at once.
                vcpu.immediateExit = false
                atomicMemoryFence(ordering: .sequentiallyConsistent)
                if machine.isStopping { return }
                continue
            }
            if let end = exits.handle(exit, vcpu: vcpu.id) {
                machine.stop(end)
                return
            }
        }
    }
}

/// Turns exits into device accesses; returns how the machine ends when an exit ends it.
/// The body of every vCPU thread's loop (public for the exit benchmark).
public final class ExitHandler: @unchecked Sendable {
    let io: IOBus
    let mmio: MMIOBus?

    public init(io: IOBus, mmio: MMIOBus? = nil) {
        self.io = io
        self.mmio = mmio
    }

    @inline(__always)
    public func handle(_ exit: KVMExit, vcpu: UInt32) -> MachineExit? {
        switch exit {
        case let .portOut(port, size, count, data):
            if count == 1 {
                io.write(port: port, data: data)
            } else {
                for i in 0..<count { io.write(port: port, data: UnsafeRawBufferPointer(rebasing: data[(i * size)..<((i + 1) * size)])) }
            }
        case let .portIn(port, size, count, data):
            if count == 1 {
                io.read(port: port, data: data)
            } else {
                for i in 0..<count { io.read(port: port, data: UnsafeMutableRawBufferPointer(rebasing: data[(i * size)..<((i + 1) * size)])) }
            }
        case let .mmioRead(address, data):
            if let mmio { mmio.read(address: address, data: data) } else { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
        case let .mmioWrite(address, data):
            mmio?.write(address: address, data: data)
        case .halt:
            return nil
        case .shutdown:
            return .crashed("vCPU \(vcpu) shut down (triple fault)")
        case let .systemEvent(type, _):
            switch type {
            case 1: return .poweroff                    // KVM_SYSTEM_EVENT_SHUTDOWN
            case 2: return .reset                       // KVM_SYSTEM_EVENT_RESET
            default: return .crashed("vCPU \(vcpu): system event \(type)")
            }
        case let .failEntry(reason, cpu):
            return .crashed("vCPU \(vcpu) could not enter the guest (hardware reason 0x\(String(reason, radix: 16)), CPU \(cpu))")
        case let .internalError(suberror, data):
            return .crashed("vCPU \(vcpu): KVM internal error \(suberror) \(data.map { "0x" + String($0, radix: 16) })")
        case let .exception(n):
            return .crashed("vCPU \(vcpu): exception \(n)")
        case .interrupted, .irqWindowOpen, .debug, .ioapicEOI:
            return nil
        case let .unknown(reason, hw):
            return .crashed("vCPU \(vcpu): unhandled exit \(reason) (hardware 0x\(String(hw, radix: 16)))")
        }
        return nil
    }
}

/// The stop switch shared by the vCPU threads and the main thread.
final class MachineControl: @unchecked Sendable {
    private let stopping = Atomic<Bool>(false)
    private let lock = Lock()
    private var result: MachineExit?
    var threads: [VCPUThread] = []
    /// Told once when the machine stops (the main thread waits for it).
    var onStop: (() -> Void)?

    var isStopping: Bool { stopping.load(ordering: .sequentiallyConsistent) }

    var exit: MachineExit? { lock.withLock { result } }

    /// Records the first reason and kicks every vCPU.
    func stop(_ reason: MachineExit) {
        let first = lock.withLock { () -> Bool in
            if result != nil { return false }
            result = reason
            return true
        }
        guard first else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        for t in threads { t.kick() }
        onStop?()
    }
}
