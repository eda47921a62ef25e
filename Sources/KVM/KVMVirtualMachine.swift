import CLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A KVM virtual machine file descriptor: memory slots, interrupt controllers and routing,
/// irqfd/ioeventfd, MSI, and the factory of vCPUs. Closed on deinit or by `close()`.
///
/// Safe to use from several threads for the calls KVM itself serializes (all of them here);
/// `close()` must not race other calls.
public final class KVMVirtualMachine: @unchecked Sendable {
    private(set) var fd: Int32
    let vcpuMmapSize: Int

    init(fd: Int32, vcpuMmapSize: Int) {
        self.fd = fd
        self.vcpuMmapSize = vcpuMmapSize
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Closes the descriptor now; later calls throw `.closed`.
    public func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    public var isClosed: Bool { fd < 0 }

    // MARK: memory

    /// Flags of a memory slot (`KVM_MEM_*`).
    public struct MemoryFlags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// `KVM_MEM_LOG_DIRTY_PAGES`.
        public static let logDirtyPages = MemoryFlags(rawValue: UInt32(KVM_MEM_LOG_DIRTY_PAGES))
        /// `KVM_MEM_READONLY`: guest writes become MMIO exits.
        public static let readOnly = MemoryFlags(rawValue: UInt32(KVM_MEM_READONLY))
    }

    /// `KVM_SET_USER_MEMORY_REGION`: maps `size` bytes at `host` into guest-physical `guestAddress`
    /// as slot `slot`. A size of 0 deletes the slot.
    public func setMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64,
                                host: UnsafeMutableRawPointer?, flags: MemoryFlags = []) throws(KVMError) {
        var region = kvm_userspace_memory_region(
            slot: slot, flags: flags.rawValue, guest_phys_addr: guestAddress, memory_size: size,
            userspace_addr: UInt64(UInt(bitPattern: host)))
        let what = "memory slot \(slot) (guest 0x\(String(guestAddress, radix: 16)), \(size) bytes)"
        do {
            _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
        } catch {
            switch error.errno {
            case EEXIST:
                throw KVMError(.invalidMemoryRegion, "\(what) overlaps another slot: give each slot its own guest-physical range", errno: EEXIST)
            case EINVAL:
                throw KVMError(.invalidMemoryRegion, "\(what) is invalid: the slot number must be below KVM_CAP_NR_MEMSLOTS and the address, size and host pointer page-aligned", errno: EINVAL)
            case EFAULT:
                throw KVMError(.invalidMemoryRegion, "\(what): the host range is not mapped in this process", errno: EFAULT)
            default:
                throw error
            }
        }
    }

    /// `KVM_SET_TSS_ADDR`: three pages of guest-physical space KVM needs on Intel (below 4 GiB,
    /// outside RAM).
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", value: UInt(address))
    }

    /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for the EPT identity map on Intel.
    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var a = address
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &a)
    }

    // MARK: interrupt controllers

    /// `KVM_CREATE_IRQCHIP`: in-kernel PIC pair, IOAPIC and a local APIC per vCPU, with the
    /// default GSI routing (`GSIRoute.defaultRouting()`).
    /// Call before creating vCPUs.
    public func createIRQChip() throws(KVMError) {
        _ = try KVMSyscall.ioctl(fd, passage_KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", value: 0)
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: local APICs in the kernel, the IOAPIC and PIC left
    /// to user space (their interrupts arrive as `KVM_EXIT_IOAPIC_EOI`). Call before creating vCPUs.
    public func enableSplitIRQChip(ioapicPins: UInt64 = 24) throws(KVMError) {
        var cap = kvm_enable_cap()
        cap.cap = UInt32(KVM_CAP_SPLIT_IRQCHIP)
        cap.args.0 = ioapicPins
        _ = try KVMSyscall.ioctl(fd, passage_KVM_ENABLE_CAP, "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", &cap)
    }

    /// `KVM_CREATE_PIT2`: the in-kernel i8254 timer on GSI 0 (needs the in-kernel irqchip).
    public func createPIT2() throws(KVMError) {
        var config = kvm_pit_config()
        _ = try KVMSyscall.ioctl(fd, passage_KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &config)
    }

    /// `KVM_IRQ_LINE`: sets the level of `gsi`.
    public func setIRQLine(gsi: UInt32, level: Bool) throws(KVMError) {
        var l = kvm_irq_level()
        l.irq = gsi
        l.level = level ? 1 : 0
        _ = try KVMSyscall.ioctl(fd, passage_KVM_IRQ_LINE, "KVM_IRQ_LINE", &l)
    }

    /// `KVM_SET_GSI_ROUTING`: replaces the whole routing table.
    public func setGSIRouting(_ routes: [GSIRoute]) throws(KVMError) {
        guard let table = passage_kvm_irq_routing_alloc(UInt32(routes.count)) else {
            throw KVMError.call("KVM_SET_GSI_ROUTING", errno: ENOMEM)
        }
        defer { free(table) }
        let entries = passage_kvm_irq_routing_entries(table)!
        for (i, route) in routes.enumerated() {
            switch route {
            case let .irqchip(gsi, chip, pin):
                passage_kvm_irq_routing_set_irqchip(entries + i, gsi, chip.rawValue, pin)
            case let .msi(gsi, address, data):
                passage_kvm_irq_routing_set_msi(entries + i, gsi, UInt32(truncatingIfNeeded: address), UInt32(truncatingIfNeeded: address >> 32), data)
            }
        }
        _ = try KVMSyscall.ioctl(fd, passage_KVM_SET_GSI_ROUTING, "KVM_SET_GSI_ROUTING", UnsafeMutableRawPointer(table))
    }

    /// `KVM_IRQFD`: writing to `event` raises `gsi` (edge: the kernel pulses the line).
    /// With `resample`, the line is level-triggered and `resample` fires when the guest EOIs it.
    public func registerIRQFD(_ event: EventFD, gsi: UInt32, resample: EventFD? = nil) throws(KVMError) {
        var f = kvm_irqfd()
        f.fd = UInt32(event.fd)
        f.gsi = gsi
        if let resample {
            f.flags = UInt32(KVM_IRQFD_FLAG_RESAMPLE)
            f.resamplefd = UInt32(resample.fd)
        }
        _ = try KVMSyscall.ioctl(fd, passage_KVM_IRQFD, "KVM_IRQFD", &f)
    }

    /// `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`.
    public func unregisterIRQFD(_ event: EventFD, gsi: UInt32) throws(KVMError) {
        var f = kvm_irqfd()
        f.fd = UInt32(event.fd)
        f.gsi = gsi
        f.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        _ = try KVMSyscall.ioctl(fd, passage_KVM_IRQFD, "KVM_IRQFD(DEASSIGN)", &f)
    }

    /// Where an ioeventfd listens.
    public enum IOEventSpace: Sendable { case port, mmio }

    /// `KVM_IOEVENTFD`: a guest write of `length` bytes (1, 2, 4, 8; 0 = any, MMIO only) to
    /// `address` signals `event` in the kernel without exiting to user space; with `datamatch`,
    /// only writes of that value.
    public func registerIOEventFD(_ event: EventFD, space: IOEventSpace, address: UInt64, length: UInt32,
                                  datamatch: UInt64? = nil, deassign: Bool = false) throws(KVMError) {
        var e = kvm_ioeventfd()
        e.fd = event.fd
        e.addr = address
        e.len = length
        var flags: UInt32 = 0
        if space == .port { flags |= UInt32(1) << UInt32(kvm_ioeventfd_flag_nr_pio) }
        if let datamatch {
            flags |= UInt32(1) << UInt32(kvm_ioeventfd_flag_nr_datamatch)
            e.datamatch = datamatch
        }
        if deassign { flags |= UInt32(1) << UInt32(kvm_ioeventfd_flag_nr_deassign) }
        e.flags = flags
        _ = try KVMSyscall.ioctl(fd, passage_KVM_IOEVENTFD, "KVM_IOEVENTFD", &e)
    }

    /// `KVM_SIGNAL_MSI`: injects one MSI. Returns false when the guest blocked it (masked, no
    /// destination), true when it was delivered.
    @discardableResult
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) -> Bool {
        var m = kvm_msi()
        m.address_lo = UInt32(truncatingIfNeeded: address)
        m.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        m.data = data
        return try KVMSyscall.ioctl(fd, passage_KVM_SIGNAL_MSI, "KVM_SIGNAL_MSI", &m) > 0
    }

    // MARK: devices

    /// `KVM_CREATE_DEVICE` of type `KVM_DEV_TYPE_VFIO` and `KVM_DEV_VFIO_GROUP_ADD` for each VFIO
    /// group fd: KVM learns which groups the VM's devices are in (it keeps their IOMMU domains'
    /// cache coherency and lets the groups' devices be used with this VM). Returns the device fd
    /// (the caller closes it when the VM goes).
    public func addVFIOGroups(_ groupFDs: [Int32]) throws(KVMError) -> Int32 {
        let device = try createVFIODevice()
        for g in groupFDs {
            do { try addVFIOFile(g, to: device) } catch {
                Glibc.close(device)
                throw error
            }
        }
        return device
    }

    /// `KVM_CREATE_DEVICE` of type `KVM_DEV_TYPE_VFIO`: the KVM–VFIO pseudo device (the caller
    /// closes the returned fd when the VM goes).
    public func createVFIODevice() throws(KVMError) -> Int32 {
        var create = kvm_create_device()
        create.type = UInt32(KVM_DEV_TYPE_VFIO.rawValue)
        _ = try KVMSyscall.ioctl(fd, passage_KVM_CREATE_DEVICE, "KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO)", &create)
        return Int32(create.fd)
    }

    /// `KVM_DEV_VFIO_FILE_ADD` (the same attribute as the older `KVM_DEV_VFIO_GROUP_ADD`) of a VFIO
    /// group fd, or of a device cdev fd (Linux 6.6+; before its iommufd bind), to `device`.
    public func addVFIOFile(_ file: Int32, to device: Int32) throws(KVMError) {
        var vfioFD = file
        let r: Int = withUnsafeMutablePointer(to: &vfioFD) { p in
            var attr = kvm_device_attr()
            attr.group = UInt32(KVM_DEV_VFIO_GROUP)
            attr.attr = UInt64(KVM_DEV_VFIO_GROUP_ADD)
            attr.addr = UInt64(UInt(bitPattern: p))
            return withUnsafeMutablePointer(to: &attr) { passage_kvm_ioctl(device, passage_KVM_SET_DEVICE_ATTR, UnsafeMutableRawPointer($0)) }
        }
        if r < 0 { throw KVMError.call("KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_FILE_ADD)", errno: Int32(-r)) }
    }

    // MARK: vCPUs

    /// `KVM_CREATE_VCPU` with `id` (the initial APIC id), and maps its `kvm_run`.
    public func createVCPU(id: UInt32) throws(KVMError) -> KVMVirtualCPU {
        let vfd = try KVMSyscall.ioctl(fd, passage_KVM_CREATE_VCPU, "KVM_CREATE_VCPU", value: UInt(id))
        return try KVMVirtualCPU(fd: Int32(vfd), id: id, mmapSize: vcpuMmapSize)
    }
}

/// One entry of the GSI routing table.
public enum GSIRoute: Sendable, Equatable {
    /// An in-kernel interrupt controller pin.
    case irqchip(gsi: UInt32, chip: IRQChip, pin: UInt32)
    /// An MSI message (address, data).
    case msi(gsi: UInt32, address: UInt64, data: UInt32)

    /// The in-kernel interrupt controllers (`KVM_IRQCHIP_*`).
    public enum IRQChip: UInt32, Sendable {
        case picMaster = 0, picSlave = 1, ioapic = 2
    }

    /// What `KVM_CREATE_IRQCHIP` sets up: GSI 0–15 to the PICs and to the same IOAPIC pin,
    /// 16–23 to the IOAPIC alone. Start from this when adding MSI routes: the table is replaced whole.
    public static func defaultRouting() -> [GSIRoute] {
        var routes: [GSIRoute] = []
        for gsi: UInt32 in 0..<16 {
            routes.append(.irqchip(gsi: gsi, chip: gsi < 8 ? .picMaster : .picSlave, pin: gsi % 8))
        }
        for gsi: UInt32 in 0..<24 {
            routes.append(.irqchip(gsi: gsi, chip: .ioapic, pin: gsi))
        }
        return routes
    }
}
