import KVM

/// The machine's KVM GSI routing table: the in-kernel PIC/IOAPIC pins plus one MSI route per
/// passed-through vector. KVM replaces the table whole, so every change commits all of it.
final class InterruptRoutes {
    /// KVM_MAX_IRQ_ROUTES.
    static let limit = 4096
    private let vm: KVMVirtualMachine
    private var msi: [UInt32: (address: UInt64, data: UInt32)] = [:]
    private var next: UInt32 = 24                        // after the IOAPIC's 24 pins

    init(vm: KVMVirtualMachine) { self.vm = vm }

    /// A GSI of its own for one MSI vector (kept for the VM's life: a device's vectors are made once).
    func allocate() throws(VMMError) -> UInt32 {
        guard Int(next) < Self.limit else {
            throw VMMError(.passthrough, "all \(Self.limit) KVM interrupt routes are in use: pass through fewer MSI-X vectors")
        }
        defer { next += 1 }
        return next
    }

    /// Records the MSI message of `gsi` (takes effect at `commit`).
    func set(_ gsi: UInt32, address: UInt64, data: UInt32) { msi[gsi] = (address, data) }

    func commit() throws(KVMError) {
        var table = GSIRoute.defaultRouting()
        for gsi in msi.keys.sorted() {
            let m = msi[gsi]!
            table.append(.msi(gsi: gsi, address: m.address, data: m.data))
        }
        try vm.setGSIRouting(table)
    }
}

/// KVM memory slot numbers for device BARs (guest RAM uses 0 and 1).
final class MemorySlots {
    private var next: UInt32 = 8
    private var released: [UInt32] = []
    private let limit: UInt32

    init(limit: Int) { self.limit = UInt32(clamping: limit > 0 ? limit : 32) }

    func allocate() -> UInt32? {
        if let s = released.popLast() { return s }
        guard next < limit else { return nil }
        defer { next += 1 }
        return next
    }

    func release(_ slot: UInt32) { released.append(slot) }
}
