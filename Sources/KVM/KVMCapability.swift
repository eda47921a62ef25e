import CLinux

/// A KVM capability (`KVM_CAP_*`), asked for with `KVM_CHECK_EXTENSION`.
public struct KVMCapability: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public let name: String

    public init(rawValue: Int32) {
        self.rawValue = rawValue
        self.name = "KVM_CAP \(rawValue)"
    }

    public init(_ rawValue: Int32, _ name: String) {
        self.rawValue = rawValue
        self.name = name
    }

    public var description: String { name }

    /// `KVM_CAP_IRQCHIP`: in-kernel PIC, IOAPIC and local APICs.
    public static let irqchip = KVMCapability(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")
    /// `KVM_CAP_USER_MEMORY`: `KVM_SET_USER_MEMORY_REGION`.
    public static let userMemory = KVMCapability(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY")
    /// `KVM_CAP_SET_TSS_ADDR`.
    public static let setTSSAddress = KVMCapability(KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR")
    /// `KVM_CAP_EXT_CPUID`: `KVM_GET_SUPPORTED_CPUID`, `KVM_SET_CPUID2`.
    public static let extendedCPUID = KVMCapability(KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID")
    /// `KVM_CAP_PIT2`: the in-kernel i8254 (`KVM_CREATE_PIT2`).
    public static let pit2 = KVMCapability(KVM_CAP_PIT2, "KVM_CAP_PIT2")
    /// `KVM_CAP_IRQ_ROUTING`: `KVM_SET_GSI_ROUTING`.
    public static let irqRouting = KVMCapability(KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING")
    /// `KVM_CAP_IRQFD`.
    public static let irqfd = KVMCapability(KVM_CAP_IRQFD, "KVM_CAP_IRQFD")
    /// `KVM_CAP_IOEVENTFD`.
    public static let ioeventfd = KVMCapability(KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD")
    /// `KVM_CAP_SIGNAL_MSI`.
    public static let signalMSI = KVMCapability(KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI")
    /// `KVM_CAP_IMMEDIATE_EXIT`: `kvm_run.immediate_exit`, for kicking vCPUs without races.
    public static let immediateExit = KVMCapability(KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")
    /// `KVM_CAP_SPLIT_IRQCHIP`: local APICs in the kernel, IOAPIC and PIC in user space.
    public static let splitIRQChip = KVMCapability(KVM_CAP_SPLIT_IRQCHIP, "KVM_CAP_SPLIT_IRQCHIP")
    /// `KVM_CAP_TSC_DEADLINE_TIMER`.
    public static let tscDeadlineTimer = KVMCapability(KVM_CAP_TSC_DEADLINE_TIMER, "KVM_CAP_TSC_DEADLINE_TIMER")
    /// `KVM_CAP_MAX_VCPUS`: the answer is the largest vCPU count.
    public static let maxVCPUs = KVMCapability(KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS")
    /// `KVM_CAP_NR_MEMSLOTS`: the answer is the number of memory slots.
    public static let memorySlots = KVMCapability(KVM_CAP_NR_MEMSLOTS, "KVM_CAP_NR_MEMSLOTS")
    /// `KVM_CAP_IRQ_INJECT_STATUS`: `KVM_IRQ_LINE_STATUS`.
    public static let irqInjectStatus = KVMCapability(KVM_CAP_IRQ_INJECT_STATUS, "KVM_CAP_IRQ_INJECT_STATUS")

    /// What `passage-vmm` needs to boot Linux with an in-kernel irqchip.
    public static let forLinuxGuest: [KVMCapability] = [
        .userMemory, .setTSSAddress, .extendedCPUID, .irqchip, .pit2, .irqRouting, .irqfd,
        .ioeventfd, .signalMSI, .immediateExit,
    ]
}
