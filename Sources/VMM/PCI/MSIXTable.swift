/// The MSI-X table and pending-bit array of a passed-through function, emulated: the guest's
/// writes land here (never on the device's own table, which the host kernel owns), and each change
/// is handed on as "vector N changed" so the VMM can update that vector's KVM route and irqfd.
///
/// Accesses follow the PCI rules: aligned 4- or 8-byte reads and writes inside the table; anything
/// else (other sizes, misaligned, past the last entry) reads 0 and is ignored — a guest cannot
/// reach past the table. Only bit 0 (mask) of vector control is writable.
public final class MSIXTable {
    public struct Entry: Sendable, Equatable {
        public var addressLow: UInt32 = 0
        public var addressHigh: UInt32 = 0
        public var data: UInt32 = 0
        /// Bit 0: masked. Every vector starts masked (PCI spec).
        public var control: UInt32 = 1

        public var address: UInt64 { UInt64(addressHigh) << 32 | UInt64(addressLow) }
    }

    public private(set) var entries: [Entry]
    /// MSI-X enable and function mask, from the capability's message control.
    public private(set) var enabled = false
    public private(set) var functionMasked = false
    /// Pending bits the VMM recorded for masked vectors that fired.
    private var pending: [Bool]
    /// Told after entry N changed (address, data or its mask).
    public var onVectorChange: ((Int) -> Void)?
    /// Asked, when the guest reads the PBA, whether masked vector N has an interrupt waiting.
    public var pendingProbe: ((Int) -> Bool)?
    public private(set) var refusedAccesses = 0

    public init(count: Int) {
        precondition((1...2048).contains(count), "an MSI-X table has 1…2048 entries")
        entries = Array(repeating: Entry(), count: count)
        pending = Array(repeating: false, count: count)
    }

    public var count: Int { entries.count }

    /// Whether vector `v` may not be delivered now.
    public func isMasked(_ v: Int) -> Bool {
        !enabled || functionMasked || entries[v].control & 1 != 0
    }

    /// Records that masked vector `v` fired (the PBA shows it until it is delivered).
    public func setPending(_ v: Int, _ value: Bool) { pending[v] = value }

    /// The capability's enable and function-mask bits changed (or not): returns whether anything did.
    @discardableResult
    public func setControl(enabled: Bool, functionMasked: Bool) -> Bool {
        guard enabled != self.enabled || functionMasked != self.functionMasked else { return false }
        self.enabled = enabled
        self.functionMasked = functionMasked
        return true
    }

    private func valid(_ offset: UInt64, _ size: Int, limit: UInt64) -> Bool {
        (size == 4 || size == 8) && offset % UInt64(size) == 0 && offset < limit && limit - offset >= UInt64(size)
    }

    /// A guest read of the table at `offset` from its start.
    public func readTable(offset: UInt64, size: Int) -> UInt64 {
        guard valid(offset, size, limit: UInt64(entries.count) * 16) else {
            refusedAccesses += 1
            return 0
        }
        var v: UInt64 = 0
        for i in 0..<(size / 4) {
            v |= UInt64(word(offset + UInt64(4 * i))) << (32 * UInt64(i))
        }
        return v
    }

    private func word(_ offset: UInt64) -> UInt32 {
        let e = entries[Int(offset / 16)]
        switch offset % 16 {
        case 0: return e.addressLow
        case 4: return e.addressHigh
        case 8: return e.data
        default: return e.control
        }
    }

    /// A guest write to the table.
    public func writeTable(offset: UInt64, size: Int, value: UInt64) {
        guard valid(offset, size, limit: UInt64(entries.count) * 16) else {
            refusedAccesses += 1
            return
        }
        let v = Int(offset / 16)
        let before = entries[v]
        for i in 0..<(size / 4) {
            let w = UInt32(truncatingIfNeeded: value >> (32 * UInt64(i)))
            switch (offset + UInt64(4 * i)) % 16 {
            case 0: entries[v].addressLow = w & ~0x3        // dword aligned
            case 4: entries[v].addressHigh = w
            case 8: entries[v].data = w
            default: entries[v].control = w & 1
            }
        }
        if entries[v] != before { onVectorChange?(v) }
    }

    /// A guest read of the pending-bit array at `offset` from its start (writes are ignored).
    public func readPBA(offset: UInt64, size: Int) -> UInt64 {
        let limit = UInt64((entries.count + 63) / 64) * 8
        guard valid(offset, size, limit: limit) else {
            refusedAccesses += 1
            return 0
        }
        var bits: UInt64 = 0
        for bit in 0..<(size * 8) {
            let v = Int(offset * 8) + bit
            guard v < entries.count else { break }
            if pending[v] || (isMasked(v) && pendingProbe?(v) == true) { bits |= 1 << UInt64(bit) }
        }
        return bits
    }
}
