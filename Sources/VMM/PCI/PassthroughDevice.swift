import KVM
import VFIO
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A host PCI function bound to vfio-pci, given to the guest: configuration space virtualized
/// (`PassthroughConfigSpace`), BARs mmapped from the device and mapped into the guest as KVM
/// memory slots (except the pages of the MSI-X table and PBA, which trap to `MSIXTable`).
/// Interrupts never take a user-space hop: MSI-X and MSI vectors go device → VFIO eventfd → KVM
/// irqfd (an MSI route) → guest; INTx goes to an IOAPIC pin through a resampling irqfd, and KVM's
/// resample eventfd (the guest's EOI) is VFIO's unmask eventfd. Exactly one kind is on at a time,
/// as on real hardware: INTx while the guest has neither MSI nor MSI-X enabled.
///
/// Every method runs with the machine's device lock held (configuration accesses come from the
/// I/O bus, BAR traps from the MMIO bus), so the state needs no lock of its own.
public final class PassthroughDevice: PCIFunction, MMIODevice {
    public let device: VFIODevice
    private let configRegion: VFIODevice.Region
    /// VFIO region of each implemented BAR.
    private let regions: [Int: VFIODevice.Region]
    /// mmapped areas of each BAR: (offset in the BAR, mapping).
    private var mappings: [Int: [(offset: UInt64, map: VFIOMapping)]] = [:]
    public let config: PassthroughConfigSpace
    public let msix: MSIXTable?
    private let msixVectors: VectorSet
    private let msiVectors: VectorSet
    /// The INTx line: its IOAPIC GSI, the trigger and resample eventfds, whether it is wired now.
    private var intx: (gsi: UInt32, trigger: EventFD, resample: EventFD, active: Bool)?
    /// KVM slots of each BAR now: (slot, guest address, size).
    private var slots: [Int: [(slot: UInt32, guest: UInt64, size: UInt64)]] = [:]
    private var ioWindows: [Int: IOBARWindow] = [:]
    private let vm: KVMVirtualMachine
    private let routes: InterruptRoutes
    private let memorySlots: MemorySlots
    private let mmio: MMIOBus
    private let io: IOBus
    /// Where problems the guest causes at run time are reported (they never stop the VM).
    private let report: (String) -> Void
    private var reported = Set<String>()

    static let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))

    /// `intxGSI`: the IOAPIC pin the guest's ACPI tables route this slot's INTA to.
    init(device: VFIODevice, vm: KVMVirtualMachine, routes: InterruptRoutes, memorySlots: MemorySlots,
         mmio: MMIOBus, io: IOBus, intxGSI: UInt32, report: @escaping (String) -> Void) throws(VMMError) {
        self.device = device
        self.vm = vm
        self.routes = routes
        self.memorySlots = memorySlots
        self.mmio = mmio
        self.io = io
        self.report = report
        msixVectors = VectorSet(kind: "\(device.address) MSI-X")
        msiVectors = VectorSet(kind: "\(device.address) MSI")
        guard device.info.isPCI else { throw VMMError(.passthrough, "\(device.address) is not a PCI device to VFIO") }
        do {
            configRegion = try device.region(VFIODevice.PCIRegion.config.rawValue)
            var r: [Int: VFIODevice.Region] = [:]
            for i in 0..<6 where UInt32(i) < device.info.regions {
                let region = try device.region(UInt32(i))
                if region.size > 0 { r[i] = region }
            }
            regions = r
        } catch { throw VMMError(error) }
        let deviceConfig = DeviceConfig(device: device, region: configRegion)
        let bars = PCIBARDescription.describe(config: deviceConfig, sizes: regions.mapValues(\.size))
        // INTx only when VFIO can signal it through an eventfd (it reports no INTx for a device
        // without a pin, or whose line the host cannot mask).
        let intxInfo = try? device.interrupt(VFIODevice.PCIInterrupt.intx.rawValue)
        let intxUsable = intxInfo.map { $0.count > 0 && $0.eventfdCapable } ?? false
        config = PassthroughConfigSpace(backend: deviceConfig, bars: bars, intxLine: intxUsable ? UInt8(intxGSI) : nil)
        if config.hasINTx {
            do { intx = (intxGSI, try EventFD(), try EventFD(), false) } catch { throw VMMError(error) }
        }
        if let layout = config.msix {
            guard regions[layout.tableBAR] != nil, regions[layout.pbaBAR] != nil else {
                throw VMMError(.passthrough, "\(device.address): its MSI-X table or PBA lies in a BAR VFIO does not expose")
            }
            msix = MSIXTable(count: layout.tableSize)
        } else {
            msix = nil
        }
        // mmap what VFIO lets us map, once; the guest's BAR moves only change the KVM slots.
        for bar in bars where bar.kind != .io {
            guard let region = regions[bar.index], region.mappable else { continue }
            let areas: [(offset: UInt64, size: UInt64)] = region.sparseAreas.isEmpty ? [(UInt64(0), region.size)] : region.sparseAreas.map { ($0.offset, $0.size) }
            var maps: [(UInt64, VFIOMapping)] = []
            for a in areas where a.size > 0 && a.offset % Self.pageSize == 0 && a.size % Self.pageSize == 0 {
                do throws(VFIOError) { maps.append((a.offset, try device.map(region, offset: a.offset, size: a.size))) } catch {
                    report("\(device.address) BAR \(bar.index): \(error.message); that part traps instead")
                }
            }
            mappings[bar.index] = maps
        }
        config.onMappingChange = { [unowned self] in self.updateMappings() }
        config.onMSIXControlChange = { [unowned self] in self.msixControlChanged() }
        msix?.onVectorChange = { [unowned self] v in self.vectorChanged(v) }
        msix?.pendingProbe = { [unowned self] v in self.msixVectors.hasPending(v) }
        config.onMSIChange = { [unowned self] in self.msiChanged() }
        config.msiPendingProbe = { [unowned self] v in self.msiVectors.hasPending(v) }
    }

    deinit {
        for (_, list) in slots { for s in list { try? vm.setMemoryRegion(slot: s.slot, guestAddress: s.guest, size: 0, host: nil) } }
        if msixVectors.active { try? device.disableInterrupts(.msix) }
        if msiVectors.active { try? device.disableInterrupts(.msi) }
        if intx?.active == true { try? device.disableInterrupts(.intx) }
    }

    /// Wires INTx before the guest runs (a device starts with neither MSI nor MSI-X on).
    func start() { updateINTx() }

    // MARK: configuration space

    public func configRead(offset: Int, size: Int) -> UInt32 { config.read(offset: offset, size: size) }
    public func configWrite(offset: Int, size: Int, value: UInt32) { config.write(offset: offset, size: size, value: value) }

    // MARK: BARs

    /// Places BARs where firmware would: memory BARs from `memory`, I/O BARs from `ports`, each
    /// aligned to its size (memory at least a page, so it can be a KVM slot).
    func assignBARs(memory: inout UInt64, memoryEnd: UInt64, ports: inout UInt64, portsEnd: UInt64) throws(VMMError) {
        for bar in config.bars.sorted(by: { $0.size > $1.size }) {
            if bar.kind == .io {
                let align = max(bar.size, 4)
                let at = (ports + align - 1) & ~(align - 1)
                guard at + bar.size <= portsEnd else { throw VMMError(.passthrough, "\(device.address): no room for its \(bar.size)-byte I/O BAR \(bar.index)") }
                config.assign(bar: bar.index, address: at)
                ports = at + bar.size
            } else {
                let align = max(bar.size, Self.pageSize)
                let at = (memory + align - 1) & ~(align - 1)
                guard at + bar.size <= memoryEnd else {
                    throw VMMError(.passthrough, "\(device.address): BAR \(bar.index) (\(bar.size >> 20) MiB) does not fit in the PCI hole below 4 GiB")
                }
                config.assign(bar: bar.index, address: at)
                memory = at + max(bar.size, Self.pageSize)
            }
        }
    }

    /// Page-aligned pieces of BAR `index` (offsets in the BAR) to map straight into the guest:
    /// the mmapped areas minus the pages of the MSI-X table and PBA.
    func directPieces(bar index: Int) -> [(offset: UInt64, size: UInt64)] {
        guard let maps = mappings[index] else { return [] }
        let page = Self.pageSize
        var traps: [Range<UInt64>] = []
        if let m = config.msix {
            if m.tableBAR == index { traps.append((m.tableOffset & ~(page - 1))..<((m.tableOffset + m.tableBytes + page - 1) & ~(page - 1))) }
            if m.pbaBAR == index { traps.append((m.pbaOffset & ~(page - 1))..<((m.pbaOffset + m.pbaBytes + page - 1) & ~(page - 1))) }
        }
        var pieces: [(UInt64, UInt64)] = []
        for (offset, map) in maps {
            var parts = [offset..<(offset + UInt64(map.size))]
            for t in traps {
                parts = parts.flatMap { p -> [Range<UInt64>] in
                    guard p.overlaps(t) else { return [p] }
                    return [p.lowerBound..<t.lowerBound, t.upperBound..<p.upperBound].filter { !$0.isEmpty }
                }
            }
            pieces += parts.map { ($0.lowerBound, $0.upperBound - $0.lowerBound) }
        }
        return pieces
    }

    /// Brings the KVM slots and trapped ranges in line with where the guest put the BARs and
    /// whether it decodes them.
    func updateMappings() {
        for bar in config.bars {
            let address = config.address(ofBAR: bar.index) ?? 0
            if bar.kind == .io {
                if let w = ioWindows.removeValue(forKey: bar.index) { io.unregisterHoldingLock(w) }
                guard config.ioDecoding, address != 0 else { continue }
                let w = IOBARWindow(device: self, bar: bar.index)
                if address + bar.size <= 0x1_0000, io.registerHoldingLock(w, base: UInt16(address), count: UInt16(bar.size)) {
                    ioWindows[bar.index] = w
                } else {
                    note("\(device.address): the guest put I/O BAR \(bar.index) at 0x\(hex(address)), over another device's ports; it stays unreachable")
                }
                continue
            }
            let on = config.memoryDecoding && address != 0
            let want: [(guest: UInt64, offset: UInt64, size: UInt64)] =
                on && address % Self.pageSize == 0 ? directPieces(bar: bar.index).map { (address + $0.offset, $0.offset, $0.size) } : []
            let have = slots[bar.index] ?? []
            if have.map({ [$0.guest, $0.size] }) != want.map({ [$0.guest, $0.size] }) {
                for s in have {
                    try? vm.setMemoryRegion(slot: s.slot, guestAddress: s.guest, size: 0, host: nil)
                    memorySlots.release(s.slot)
                }
                var now: [(slot: UInt32, guest: UInt64, size: UInt64)] = []
                for w in want {
                    guard let host = hostPointer(bar: bar.index, offset: w.offset), let slot = memorySlots.allocate() else { continue }
                    do {
                        try vm.setMemoryRegion(slot: slot, guestAddress: w.guest, size: w.size, host: host)
                        now.append((slot, w.guest, w.size))
                    } catch {
                        memorySlots.release(slot)
                        note("\(device.address): BAR \(bar.index) at 0x\(hex(address)) cannot be mapped (\(error.message)); its accesses trap instead")
                    }
                }
                slots[bar.index] = now
            }
            // The whole BAR traps where no slot covers it (MSI-X pages, unmappable parts).
            if !mmio.placeHoldingLock(self, region: bar.index, base: on ? address : nil, size: bar.size) {
                note("\(device.address): the guest put BAR \(bar.index) at 0x\(hex(address)), over another device's range; it stays unreachable")
            }
        }
    }

    private func hostPointer(bar: Int, offset: UInt64) -> UnsafeMutableRawPointer? {
        for (start, map) in mappings[bar] ?? [] where offset >= start && offset < start + UInt64(map.size) {
            return map.base + Int(offset - start)
        }
        return nil
    }

    // MARK: trapped BAR accesses

    public func mmioRead(region bar: Int, offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        if let m = config.msix, let table = msix {
            if bar == m.tableBAR, offset >= m.tableOffset, offset < m.tableOffset + m.tableBytes {
                data.storeLittleEndianValue(table.readTable(offset: offset - m.tableOffset, size: data.count))
                return
            }
            if bar == m.pbaBAR, offset >= m.pbaOffset, offset < m.pbaOffset + m.pbaBytes {
                data.storeLittleEndianValue(table.readPBA(offset: offset - m.pbaOffset, size: data.count))
                return
            }
        }
        guard let region = regions[bar], offset + UInt64(data.count) <= region.size,
              pread(device.fd, data.baseAddress, data.count, off_t(region.offset + offset)) == data.count else {
            data.initializeMemory(as: UInt8.self, repeating: 0xFF)
            return
        }
    }

    public func mmioWrite(region bar: Int, offset: UInt64, data: UnsafeRawBufferPointer) {
        if let m = config.msix, let table = msix {
            if bar == m.tableBAR, offset >= m.tableOffset, offset < m.tableOffset + m.tableBytes {
                table.writeTable(offset: offset - m.tableOffset, size: data.count, value: data.littleEndianBytes)
                return
            }
            if bar == m.pbaBAR, offset >= m.pbaOffset, offset < m.pbaOffset + m.pbaBytes { return }   // read-only
        }
        guard let region = regions[bar], offset + UInt64(data.count) <= region.size else { return }
        _ = pwrite(device.fd, data.baseAddress, data.count, off_t(region.offset + offset))
    }

    // MARK: interrupts

    private func msixControlChanged() {
        guard let table = msix else { return }
        guard table.setControl(enabled: config.msixEnabled, functionMasked: config.msixFunctionMasked) else { return }
        do throws(VMMError) {
            if table.enabled && !msixVectors.active {
                try msixVectors.ensure(table.count, routes: routes)
                for v in 0..<table.count {
                    routes.set(msixVectors.gsi(v), address: table.entries[v].address, data: table.entries[v].data)
                }
                do { try routes.commit() } catch { throw VMMError(error) }
                try enable(msixVectors, .msix, count: table.count)
            } else if !table.enabled && msixVectors.active {
                try disable(msixVectors, .msix)
            }
        } catch {
            note("\(device.address): MSI-X \(table.enabled ? "enable" : "disable") failed: \(error.message)")
        }
        for v in 0..<msixVectors.count { syncMSIX(v) }
        updateINTx()
    }

    private func vectorChanged(_ v: Int) {
        guard msixVectors.active, let table = msix, v < msixVectors.count else { return }
        routes.set(msixVectors.gsi(v), address: table.entries[v].address, data: table.entries[v].data)
        do { try routes.commit() } catch { note("\(device.address): KVM_SET_GSI_ROUTING for MSI-X vector \(v) failed: \(error.message)") }
        syncMSIX(v)
    }

    /// A vector is wired to KVM (irqfd) exactly while MSI-X is on and the vector unmasked; a masked
    /// vector's interrupts wait in its eventfd (the PBA shows them) and are delivered by KVM when
    /// the irqfd is attached again.
    private func syncMSIX(_ v: Int) {
        guard let table = msix else { return }
        let want = msixVectors.active && !table.isMasked(v)
        msixVectors.setIRQFD(v, want, vm: vm, note: note)
        if want { table.setPending(v, false) }
    }

    /// The guest wrote the MSI capability: enable or disable (VFIO allocates the host vectors
    /// at enable, so a new vector count means disable and enable again), new address or data
    /// (the routes), mask bits (the irqfds).
    private func msiChanged() {
        let st = config.msiState
        let want = st.enabled ? st.vectors : 0
        do throws(VMMError) {
            if msiVectors.active && want != msiVectors.enabledCount {
                try disable(msiVectors, .msi)
            }
            if want > 0 {
                try msiVectors.ensure(want, routes: routes)
                for v in 0..<want { routes.set(msiVectors.gsi(v), address: st.address, data: st.data(ofVector: v)) }
                do { try routes.commit() } catch { throw VMMError(error) }
                if !msiVectors.active { try enable(msiVectors, .msi, count: want) }
            }
        } catch {
            note("\(device.address): MSI \(st.enabled ? "enable (\(want) vectors)" : "disable") failed: \(error.message)")
        }
        for v in 0..<msiVectors.count {
            msiVectors.setIRQFD(v, v < msiVectors.enabledCount && !st.isMasked(v), vm: vm, note: note)
        }
        updateINTx()
    }

    /// Hands the first `count` vectors of `set` to VFIO as kind `index` (INTx unwired first: VFIO
    /// takes one kind at a time).
    private func enable(_ set: VectorSet, _ index: VFIODevice.PCIInterrupt, count: Int) throws(VMMError) {
        setINTx(false)
        do { try device.setInterruptEventFDs(index, set.fds(count)) } catch { throw VMMError(error) }
        set.enabledCount = count
    }

    /// Detaches `set`'s irqfds and takes kind `index` back from VFIO.
    private func disable(_ set: VectorSet, _ index: VFIODevice.PCIInterrupt) throws(VMMError) {
        set.detachAll(vm: vm, note: note)
        set.enabledCount = 0
        do { try device.disableInterrupts(index) } catch { throw VMMError(error) }
    }

    /// INTx is wired exactly while neither MSI nor MSI-X is.
    private func updateINTx() { setINTx(!msiVectors.active && !msixVectors.active) }

    /// Wires INTx (KVM: a resampling irqfd on the slot's IOAPIC pin; VFIO: the trigger and the
    /// unmask eventfd) or unwires it. VFIO masks the line when it fires; the guest's EOI makes KVM
    /// lower the pin and signal the resample eventfd, on which VFIO unmasks the line.
    private func setINTx(_ on: Bool) {
        guard let line = intx, line.active != on else { return }
        if on {
            _ = line.trigger.consume()                       // nothing stale from before
            _ = line.resample.consume()
            do {
                try vm.registerIRQFD(line.trigger, gsi: line.gsi, resample: line.resample)
            } catch {
                return note("\(device.address): KVM_IRQFD (resample) for INTx on GSI \(line.gsi) failed: \(error.message)")
            }
            do {
                try device.setInterruptEventFDs(.intx, [line.trigger.fd])
                try device.setUnmaskEventFDs(.intx, [line.resample.fd])
            } catch {
                try? device.disableInterrupts(.intx)
                try? vm.unregisterIRQFD(line.trigger, gsi: line.gsi)
                return note("\(device.address): INTx through VFIO failed: \(error.message)")
            }
        } else {
            // VFIO first (no more triggers), then KVM (dropping the resampler lowers the pin).
            do { try device.disableInterrupts(.intx) } catch { note("\(device.address): disabling INTx failed: \(error.message)") }
            do { try vm.unregisterIRQFD(line.trigger, gsi: line.gsi) } catch {
                note("\(device.address): KVM_IRQFD (deassign) for INTx on GSI \(line.gsi) failed: \(error.message)")
            }
        }
        intx!.active = on
    }

    // MARK: helpers

    private func note(_ message: String) {
        if reported.insert(message).inserted { report(message) }
    }

    private func hex(_ v: UInt64) -> String { String(v, radix: 16) }
}

/// The real device's configuration space through VFIO's config region.
final class DeviceConfig: PCIConfigBackend {
    let device: VFIODevice
    let region: VFIODevice.Region

    init(device: VFIODevice, region: VFIODevice.Region) {
        self.device = device
        self.region = region
    }

    func configRead(offset: Int, size: Int) -> UInt32 {
        guard let bytes = try? device.read(region, at: UInt64(offset), count: size) else { return size >= 4 ? 0xFFFF_FFFF : (1 << (8 * UInt32(size))) - 1 }
        var v: UInt32 = 0
        for (i, b) in bytes.enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
        return v
    }

    func configWrite(offset: Int, size: Int, value: UInt32) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
        try? device.write(region, at: UInt64(offset), bytes)
    }
}

/// The I/O BAR of a passed-through device on the port bus: accesses go to VFIO's BAR region.
final class IOBARWindow: PortIODevice {
    unowned let device: PassthroughDevice
    let bar: Int

    init(device: PassthroughDevice, bar: Int) {
        self.device = device
        self.bar = bar
    }

    func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {
        device.mmioRead(region: bar, offset: UInt64(offset), data: data)
    }

    func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        device.mmioWrite(region: bar, offset: UInt64(offset), data: data)
    }
}

/// The vectors of one message-signalled kind (MSI or MSI-X) of a passed-through device: an
/// eventfd and a GSI of its own for each (made on first use, kept for the VM's life), and whether
/// the eventfd is attached to KVM now.
final class VectorSet {
    let kind: String
    private var vectors: [(event: EventFD, gsi: UInt32, irqfd: Bool)] = []
    /// How many vectors VFIO has the eventfds of now (0: the kind is off on the device).
    var enabledCount = 0
    var active: Bool { enabledCount > 0 }

    init(kind: String) { self.kind = kind }

    var count: Int { vectors.count }
    func gsi(_ v: Int) -> UInt32 { vectors[v].gsi }
    func fds(_ n: Int) -> [Int32] { vectors[0..<n].map(\.event.fd) }

    /// At least `n` vectors.
    func ensure(_ n: Int, routes: InterruptRoutes) throws(VMMError) {
        while vectors.count < n {
            let e: EventFD
            do { e = try EventFD() } catch { throw VMMError(error) }
            vectors.append((e, try routes.allocate(), false))
        }
    }

    func setIRQFD(_ v: Int, _ on: Bool, vm: KVMVirtualMachine, note: (String) -> Void) {
        guard vectors[v].irqfd != on else { return }
        do {
            if on { try vm.registerIRQFD(vectors[v].event, gsi: vectors[v].gsi) } else { try vm.unregisterIRQFD(vectors[v].event, gsi: vectors[v].gsi) }
            vectors[v].irqfd = on
        } catch {
            note("KVM_IRQFD for \(kind) vector \(v) failed: \(error.message)")
        }
    }

    func detachAll(vm: KVMVirtualMachine, note: (String) -> Void) {
        for v in 0..<vectors.count { setIRQFD(v, false, vm: vm, note: note) }
    }

    /// Whether vector `v` fired while detached (its interrupt waits in the eventfd).
    func hasPending(_ v: Int) -> Bool {
        guard v < vectors.count else { return false }
        var p = pollfd(fd: vectors[v].event.fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1
    }
}
