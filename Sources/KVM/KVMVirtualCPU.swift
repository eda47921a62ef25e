import CLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A vCPU file descriptor and its mapped `kvm_run`: registers, MSRs, CPUID, local APIC, and
/// `run()`. Unmapped and closed on deinit or by `close()`.
///
/// `run()` and the register calls belong to one thread (the vCPU's own); `kick()` may come from
/// any thread.
public final class KVMVirtualCPU: @unchecked Sendable {
    @usableFromInline var fd: Int32
    /// The id given to `KVM_CREATE_VCPU` (the initial APIC id).
    public let id: UInt32
    @usableFromInline let run: UnsafeMutablePointer<kvm_run>
    let mmapSize: Int

    init(fd: Int32, id: UInt32, mmapSize: Int) throws(KVMError) {
        let p = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else {
            let e = errno
            Glibc.close(fd)
            throw KVMError.call("mmap kvm_run of vCPU \(id)", errno: e)
        }
        self.fd = fd
        self.id = id
        self.mmapSize = mmapSize
        self.run = p.bindMemory(to: kvm_run.self, capacity: 1)
    }

    deinit {
        munmap(run, mmapSize)
        if fd >= 0 { Glibc.close(fd) }
    }

    /// Closes the descriptor now (the mapping stays until deinit); later calls throw `.closed`.
    public func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    // MARK: running

    /// `KVM_RUN` until the guest needs user space, decoded. A signal (a kick) gives `.interrupted`,
    /// never an error and never a silent retry.
    @inlinable
    public func runOnce() throws(KVMError) -> KVMExit {
        let r = passage_kvm_run(fd)
        if r < 0 {
            if r == -EINTR || r == -EAGAIN { return .interrupted }
            if fd < 0 { throw KVMError(.closed, "KVM_RUN: vCPU \(id) was closed already") }
            throw KVMError.call("KVM_RUN (vCPU \(id))", errno: -r)
        }
        return decodeExit()
    }

    @inlinable
    func decodeExit() -> KVMExit {
        let reason = run.pointee.exit_reason
        let raw = UnsafeMutableRawPointer(run)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = passage_kvm_run_io(run)!.pointee
            let size = Int(io.size), count = Int(io.count)
            let data = raw + Int(io.data_offset)
            if io.direction == UInt8(KVM_EXIT_IO_OUT) {
                return .portOut(port: io.port, size: size, count: count, data: UnsafeRawBufferPointer(start: data, count: size * count))
            }
            return .portIn(port: io.port, size: size, count: count, data: UnsafeMutableRawBufferPointer(start: data, count: size * count))
        case KVM_EXIT_MMIO:
            let address = passage_kvm_run_mmio_phys_addr(run)!.pointee
            let len = Int(min(passage_kvm_run_mmio_len(run)!.pointee, 8))
            let data = UnsafeMutableRawPointer(passage_kvm_run_mmio_data(run)!)
            if passage_kvm_run_mmio_is_write(run)!.pointee != 0 {
                return .mmioWrite(address: address, data: UnsafeRawBufferPointer(start: data, count: len))
            }
            return .mmioRead(address: address, data: UnsafeMutableRawBufferPointer(start: data, count: len))
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_IRQ_WINDOW_OPEN: return .irqWindowOpen
        case KVM_EXIT_DEBUG: return .debug
        case KVM_EXIT_EXCEPTION: return .exception(passage_kvm_run_exception(run))
        case KVM_EXIT_FAIL_ENTRY:
            return .failEntry(hardwareReason: passage_kvm_run_fail_entry_reason(run), cpu: passage_kvm_run_fail_entry_cpu(run))
        case KVM_EXIT_INTERNAL_ERROR:
            let n = min(passage_kvm_run_internal_ndata(run), 16)
            return .internalError(suberror: passage_kvm_run_internal_suberror(run),
                                  data: (0..<n).map { passage_kvm_run_internal_data(run, $0) })
        case KVM_EXIT_SYSTEM_EVENT:
            let n = min(passage_kvm_run_system_event_ndata(run), 16)
            return .systemEvent(type: passage_kvm_run_system_event_type(run),
                                data: (0..<n).map { passage_kvm_run_system_event_data(run, $0) })
        case KVM_EXIT_IOAPIC_EOI:
            // kvm_run.eoi.vector: the first byte of the union.
            return .ioapicEOI(vector: (raw + 32).load(as: UInt8.self))
        default:
            return .unknown(reason: reason, hardwareReason: passage_kvm_run_hw_exit_reason(run))
        }
    }

    /// `kvm_run.immediate_exit`: while set, `KVM_RUN` returns `EINTR` at once. Set it before
    /// signalling the vCPU's thread so a kick that lands outside `KVM_RUN` is not lost; the vCPU
    /// thread clears it when it goes on running.
    public var immediateExit: Bool {
        get { run.pointee.immediate_exit != 0 }
        set { UnsafeMutablePointer<UInt8>(OpaquePointer(run)).advanced(by: 1).pointee = newValue ? 1 : 0 }
    }

    // MARK: state

    /// `KVM_GET_REGS`.
    public func registers() throws(KVMError) -> kvm_regs {
        var r = kvm_regs()
        _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_REGS, "KVM_GET_REGS", &r)
        return r
    }

    /// `KVM_SET_REGS`.
    public func setRegisters(_ regs: kvm_regs) throws(KVMError) {
        var r = regs
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_REGS, "KVM_SET_REGS", &r)
    }

    /// `KVM_GET_SREGS`: segments, descriptor tables, control registers, EFER, APIC base.
    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        var s = kvm_sregs()
        _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_SREGS, "KVM_GET_SREGS", &s)
        return s
    }

    /// `KVM_SET_SREGS`.
    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(KVMError) {
        var s = sregs
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_SREGS, "KVM_SET_SREGS", &s)
    }

    /// `KVM_GET_FPU`.
    public func fpu() throws(KVMError) -> kvm_fpu {
        var f = kvm_fpu()
        _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_FPU, "KVM_GET_FPU", &f)
        return f
    }

    /// `KVM_SET_FPU`.
    public func setFPU(_ fpu: kvm_fpu) throws(KVMError) {
        var f = fpu
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_FPU, "KVM_SET_FPU", &f)
    }

    /// `KVM_SET_MSRS`: all or an error naming the first MSR KVM refused.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        guard let m = passage_kvm_msrs_alloc(UInt32(msrs.count)) else { throw KVMError.call("KVM_SET_MSRS", errno: ENOMEM) }
        defer { free(m) }
        let e = passage_kvm_msrs_entries(m)!
        for (i, msr) in msrs.enumerated() {
            e[i].index = msr.index
            e[i].data = msr.value
        }
        let n = try KVMSyscall.ioctl(fd, passage_KVM_SET_MSRS, "KVM_SET_MSRS", UnsafeMutableRawPointer(m))
        if n < msrs.count {
            throw KVMError(.systemCall, "KVM_SET_MSRS: KVM refused MSR 0x\(String(msrs[n].index, radix: 16)) (value 0x\(String(msrs[n].value, radix: 16))) on vCPU \(id): this KVM does not emulate it")
        }
    }

    /// `KVM_GET_MSRS`: the values of `indices`, in order.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt64] {
        guard let m = passage_kvm_msrs_alloc(UInt32(indices.count)) else { throw KVMError.call("KVM_GET_MSRS", errno: ENOMEM) }
        defer { free(m) }
        let e = passage_kvm_msrs_entries(m)!
        for (i, index) in indices.enumerated() { e[i].index = index }
        let n = try KVMSyscall.ioctl(fd, passage_KVM_GET_MSRS, "KVM_GET_MSRS", UnsafeMutableRawPointer(m))
        if n < indices.count {
            throw KVMError(.systemCall, "KVM_GET_MSRS: KVM cannot read MSR 0x\(String(indices[n], radix: 16)) on vCPU \(id)")
        }
        return (0..<indices.count).map { e[$0].data }
    }

    /// `KVM_SET_CPUID2`: what the guest's `CPUID` answers.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        guard let c = passage_kvm_cpuid2_alloc(UInt32(entries.count)) else { throw KVMError.call("KVM_SET_CPUID2", errno: ENOMEM) }
        defer { free(c) }
        let e = passage_kvm_cpuid2_entries(c)!
        for (i, entry) in entries.enumerated() { e[i] = entry.raw }
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_CPUID2, "KVM_SET_CPUID2", UnsafeMutableRawPointer(c))
    }

    /// `KVM_GET_CPUID2`.
    public func cpuid() throws(KVMError) -> [CPUIDEntry] {
        guard let c = passage_kvm_cpuid2_alloc(256) else { throw KVMError.call("KVM_GET_CPUID2", errno: ENOMEM) }
        defer { free(c) }
        _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_CPUID2, "KVM_GET_CPUID2", UnsafeMutableRawPointer(c))
        let e = passage_kvm_cpuid2_entries(c)!
        return (0..<Int(c.pointee.nent)).map { CPUIDEntry(e[$0]) }
    }

    /// `KVM_GET_LAPIC` (needs the in-kernel irqchip).
    public func lapic() throws(KVMError) -> LAPICState {
        var s = kvm_lapic_state()
        _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_LAPIC, "KVM_GET_LAPIC", &s)
        return LAPICState(s)
    }

    /// `KVM_SET_LAPIC`.
    public func setLAPIC(_ state: LAPICState) throws(KVMError) {
        var s = state.raw
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_LAPIC, "KVM_SET_LAPIC", &s)
    }

    /// `KVM_GET_MP_STATE` (`KVM_MP_STATE_RUNNABLE` = 0, `UNINITIALIZED` = 1, `INIT_RECEIVED` = 2, `HALTED` = 3, …).
    public func mpState() throws(KVMError) -> UInt32 {
        var s = kvm_mp_state()
        _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &s)
        return s.mp_state
    }

    /// `KVM_SET_MP_STATE`.
    public func setMPState(_ state: UInt32) throws(KVMError) {
        var s = kvm_mp_state(mp_state: state)
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &s)
    }
}
