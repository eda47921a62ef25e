import KVM

/// Guest RAM: one anonymous mapping split around the PCI hole below 4 GiB.
///
/// ```
/// guest-physical                      what
/// 0x0000_0000 … min(size, 3 GiB)      RAM, KVM slot 0 (low memory, boot structures, kernel, initramfs)
/// 0xC000_0000 … 0xFFFF_FFFF           PCI hole: device BARs, IOAPIC 0xFEC0_0000, LAPIC 0xFEE0_0000
/// 0x1_0000_0000 … (4 GiB + the rest)  RAM above the hole, KVM slot 1
/// ```
public final class GuestMemory: @unchecked Sendable {
    /// Start of the PCI hole: RAM below 4 GiB ends here.
    public static let pciHoleStart: UInt64 = BootLayout.pciHoleStart
    public static let fourGiB: UInt64 = 0x1_0000_0000

    /// A contiguous piece of guest RAM.
    public struct Region: Sendable {
        public let guestAddress: UInt64
        public let size: UInt64
        /// Offset of this region in the host mapping.
        public let hostOffset: Int
        public var end: UInt64 { guestAddress + size }
    }

    public let mapping: AnonymousMemory
    public let regions: [Region]
    /// Total RAM in bytes.
    public var size: UInt64 { UInt64(mapping.size) }
    /// End of RAM below the PCI hole.
    public var lowMemoryEnd: UInt64 { regions[0].end }

    public init(size: UInt64, hugePages: Bool = false) throws(VMMError) {
        guard size >= 16 << 20, size % 4096 == 0 else {
            throw VMMError(.badConfiguration, "guest memory must be a multiple of 4 KiB and at least 16 MiB, not \(size) bytes")
        }
        do { mapping = try AnonymousMemory(size: Int(size), hugePages: hugePages) } catch {
            throw VMMError(.notEnoughMemory, "cannot reserve \(size >> 20) MiB of guest memory: \(error.message)")
        }
        let low = min(size, Self.pciHoleStart)
        var r = [Region(guestAddress: 0, size: low, hostOffset: 0)]
        if size > low { r.append(Region(guestAddress: Self.fourGiB, size: size - low, hostOffset: Int(low))) }
        regions = r
    }

    /// Registers the regions as KVM memory slots 0, 1.
    public func register(with vm: KVMVirtualMachine) throws(KVMError) {
        for (i, r) in regions.enumerated() {
            try vm.setMemoryRegion(slot: UInt32(i), guestAddress: r.guestAddress, size: r.size, host: mapping.pointer + r.hostOffset)
        }
    }

    /// A host pointer to `count` bytes at guest-physical `address`, or nil if they are not all RAM.
    public func pointer(_ address: UInt64, count: Int) -> UnsafeMutableRawPointer? {
        for r in regions where address >= r.guestAddress && address < r.end {
            guard UInt64(count) <= r.end - address else { return nil }
            return mapping.pointer + r.hostOffset + Int(address - r.guestAddress)
        }
        return nil
    }

    /// Copies `bytes` to guest-physical `address`.
    public func write(_ bytes: some Collection<UInt8>, at address: UInt64) throws(VMMError) {
        guard let p = pointer(address, count: bytes.count) else {
            throw VMMError(.notEnoughMemory, "\(bytes.count) bytes at guest address 0x\(String(address, radix: 16)) fall outside guest RAM")
        }
        var q = p
        for b in bytes { q.storeBytes(of: b, as: UInt8.self); q += 1 }
    }

    /// Stores a little-endian integer at guest-physical `address`.
    public func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(VMMError) {
        guard let p = pointer(address, count: MemoryLayout<T>.size) else {
            throw VMMError(.notEnoughMemory, "guest address 0x\(String(address, radix: 16)) is outside guest RAM")
        }
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Reads a little-endian integer.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64) -> T? {
        guard let p = pointer(address, count: MemoryLayout<T>.size) else { return nil }
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }
}
