/// Why `KVM_RUN` returned, decoded from `kvm_run`.
///
/// The buffers of the I/O and MMIO cases point into the vCPU's `kvm_run` area: they are valid
/// until the next `run()`. For `portIn` and `mmioRead`, fill them before running again — that is
/// how the value reaches the guest.
public enum KVMExit {
    /// `OUT`/`OUTS` to `port`: `count` items of `size` bytes in `data`.
    case portOut(port: UInt16, size: Int, count: Int, data: UnsafeRawBufferPointer)
    /// `IN`/`INS` from `port`: fill `data` (`count` items of `size` bytes).
    case portIn(port: UInt16, size: Int, count: Int, data: UnsafeMutableRawBufferPointer)
    /// A guest write of `data` to a guest-physical address with no memory behind it.
    case mmioWrite(address: UInt64, data: UnsafeRawBufferPointer)
    /// A guest read from a guest-physical address with no memory behind it: fill `data`.
    case mmioRead(address: UInt64, data: UnsafeMutableRawBufferPointer)
    /// `HLT` (only without an in-kernel irqchip; with one, the kernel waits for an interrupt).
    case halt
    /// Triple fault, or a shutdown the guest asked for.
    case shutdown
    /// The CPU refused to enter the guest (`KVM_EXIT_FAIL_ENTRY`): bad register state.
    case failEntry(hardwareReason: UInt64, cpu: UInt32)
    /// KVM could not emulate something (`KVM_EXIT_INTERNAL_ERROR`).
    case internalError(suberror: UInt32, data: [UInt64])
    /// `KVM_EXIT_SYSTEM_EVENT`: shutdown (1), reset (2), crash (3), …
    case systemEvent(type: UInt32, data: [UInt64])
    /// A signal interrupted `KVM_RUN` (`EINTR`, or `KVM_EXIT_INTR`), or `immediate_exit` was set:
    /// the vCPU was kicked.
    case interrupted
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`.
    case irqWindowOpen
    /// `KVM_EXIT_EXCEPTION`.
    case exception(UInt32)
    /// `KVM_EXIT_DEBUG`.
    case debug
    /// `KVM_EXIT_IOAPIC_EOI` (split irqchip): the guest ended a level-triggered interrupt.
    case ioapicEOI(vector: UInt8)
    /// Anything else, with the raw exit reason.
    case unknown(reason: UInt32, hardwareReason: UInt64)
}

extension UnsafeRawBufferPointer {
    /// The bytes as a little-endian integer (up to 8 bytes; what `out`/MMIO wrote).
    @inlinable
    public var littleEndianValue: UInt64 {
        var v: UInt64 = 0
        for i in 0..<Swift.min(count, 8) { v |= UInt64(self[i]) << (8 * UInt64(i)) }
        return v
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Stores the low `count` bytes of `value`, little-endian (the answer to `in`/MMIO reads).
    @inlinable
    public func storeLittleEndian(_ value: UInt64) {
        for i in 0..<Swift.min(count, 8) { self[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }
}
