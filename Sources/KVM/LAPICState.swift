import CLinux

/// The 1 KiB register page of a local APIC (`struct kvm_lapic_state`), read and written by
/// register offset.
public struct LAPICState: Sendable {
    /// Register offsets (Intel SDM vol. 3, table 11-1).
    public enum Register: Int, Sendable {
        case id = 0x20, version = 0x30, taskPriority = 0x80, spurious = 0xF0
        case lvtTimer = 0x320, lvtLINT0 = 0x350, lvtLINT1 = 0x360, lvtError = 0x370
    }

    /// LVT delivery modes (bits 10:8).
    public enum DeliveryMode: UInt32, Sendable {
        case fixed = 0, smi = 2, nmi = 4, initialize = 5, extINT = 7
    }

    public var bytes: [UInt8]

    init(_ s: kvm_lapic_state) {
        var s = s
        bytes = withUnsafeBytes(of: &s.regs) { Array($0) }
    }

    var raw: kvm_lapic_state {
        var s = kvm_lapic_state()
        withUnsafeMutableBytes(of: &s.regs) { dst in
            bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(dst.count))) }
        }
        return s
    }

    public subscript(register: Register) -> UInt32 {
        get { self[offset: register.rawValue] }
        set { self[offset: register.rawValue] = newValue }
    }

    public subscript(offset offset: Int) -> UInt32 {
        get { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) } }
        set { bytes.withUnsafeMutableBytes { $0.storeBytes(of: newValue, toByteOffset: offset, as: UInt32.self) } }
    }

    /// Sets an LVT entry's delivery mode, keeping its other bits and unmasking it.
    public mutating func setDeliveryMode(_ register: Register, _ mode: DeliveryMode) {
        let v = self[register] & ~(UInt32(0x700) | (1 << 16))
        self[register] = v | (mode.rawValue << 8)
    }
}
