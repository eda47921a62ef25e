/// Where the configuration registers the guest may reach on the real device are read and written
/// (VFIO's configuration region for a passed-through device; an array in the tests).
public protocol PCIConfigBackend: AnyObject {
    /// `size` (1, 2, 4) bytes at `offset`, little-endian; all ones when the device does not answer.
    func configRead(offset: Int, size: Int) -> UInt32
    func configWrite(offset: Int, size: Int, value: UInt32)
}

/// A base address register of the real device as the VMM shows it.
public struct PCIBARDescription: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case io, memory32, memory64 }
    public var index: Int
    public var kind: Kind
    public var prefetchable: Bool
    /// A power of two (VFIO's region size).
    public var size: UInt64

    public init(index: Int, kind: Kind, prefetchable: Bool, size: UInt64) {
        self.index = index
        self.kind = kind
        self.prefetchable = prefetchable
        self.size = size
    }

    /// The low bits of the register that say what the BAR is.
    var flagBits: UInt32 {
        switch kind {
        case .io: 0x1
        case .memory32: prefetchable ? 0x8 : 0
        case .memory64: 0x4 | (prefetchable ? 0x8 : 0)
        }
    }

    /// Reads the BAR types from the device's configuration space and takes each size from `sizes`
    /// (index → bytes; absent or 0: the BAR is not implemented). The upper half of a 64-bit BAR
    /// is part of the BAR below it.
    public static func describe(config: PCIConfigBackend, sizes: [Int: UInt64]) -> [PCIBARDescription] {
        var out: [PCIBARDescription] = []
        var i = 0
        while i < 6 {
            let raw = config.configRead(offset: 0x10 + 4 * i, size: 4)
            let size = sizes[i] ?? 0
            let kind: Kind = raw & 1 != 0 ? .io : ((raw >> 1) & 3 == 2 && i < 5 ? .memory64 : .memory32)
            if size > 0, size & (size - 1) == 0 {
                out.append(PCIBARDescription(index: i, kind: kind, prefetchable: kind != .io && raw & 0x8 != 0, size: size))
            }
            i += kind == .memory64 ? 2 : 1
        }
        return out
    }
}

/// The MSI-X capability of the real device: where its table and pending-bit array live.
public struct MSIXLayout: Sendable, Equatable {
    /// Offset of the capability in configuration space.
    public var capability: Int
    public var tableSize: Int
    public var tableBAR: Int
    public var tableOffset: UInt64
    public var pbaBAR: Int
    public var pbaOffset: UInt64

    public var tableBytes: UInt64 { UInt64(tableSize) * 16 }
    public var pbaBytes: UInt64 { UInt64((tableSize + 63) / 64) * 8 }
}

/// The MSI capability of the real device: its shape (the registers are the VMM's, see `MSIState`).
public struct MSILayout: Sendable, Equatable {
    /// Offset of the capability in configuration space.
    public var capability: Int
    public var is64Bit: Bool
    public var perVectorMasking: Bool
    /// log2 of the vectors the device can raise (Multiple Message Capable, 0…5).
    public var capableLog2: Int

    public var dataOffset: Int { capability + (is64Bit ? 0x0C : 0x08) }
    /// Mask bits, then pending bits (with per-vector masking only).
    public var maskOffset: Int? { perVectorMasking ? capability + (is64Bit ? 0x10 : 0x0C) : nil }
    /// One past the capability's last register.
    public var end: Int { perVectorMasking ? maskOffset! + 8 : dataOffset + 4 }

    init(capability: Int, control: UInt16) {
        self.capability = capability
        is64Bit = control & 0x80 != 0
        perVectorMasking = control & 0x100 != 0
        capableLog2 = min(Int((control >> 1) & 7), 5)
    }
}

/// What the guest programmed into the (virtual) MSI capability.
public struct MSIState: Sendable, Equatable {
    public var enabled = false
    /// log2 of the vectors the guest enabled (Multiple Message Enable, at most `capableLog2`).
    public var enabledLog2 = 0
    public var address: UInt64 = 0
    public var data: UInt16 = 0
    /// Per-vector mask bits (with per-vector masking; else 0).
    public var mask: UInt32 = 0

    public var vectors: Int { 1 << enabledLog2 }
    /// Vector `v`'s message data: the low `enabledLog2` bits of the data replaced by `v` (PCI spec).
    public func data(ofVector v: Int) -> UInt32 { UInt32(data) & ~UInt32(vectors - 1) | UInt32(v) }
    public func isMasked(_ v: Int) -> Bool { mask & (1 << UInt32(v)) != 0 }
}

/// Configuration-space virtualization of a passed-through function (type 0 header).
///
/// What the guest sees, register by register:
/// - identity, class, status, subsystem: the device's (read-only; status bits written pass on,
///   they are write-one-to-clear);
/// - command: the guest's value, also written to the device (so memory decoding and bus
///   mastering take effect); toggling decoding remaps the BARs;
/// - BARs: emulated — sized by the guest (writing all ones reads back the size mask), placed where
///   the guest puts them; unimplemented BARs read 0 and ignore writes;
/// - expansion ROM, CardBus CIS, BIST: hidden (0);
/// - interrupt pin: INTA when the VMM routes the device's INTx (`intxLine`), else 0; interrupt
///   line: the guest's value, starting at that GSI (what firmware would have written);
/// - capability list: power management, MSI, vendor-specific, PCI Express and MSI-X are kept, the
///   list re-linked around every other capability, whose bytes read 0 and ignore writes. PM,
///   vendor-specific and PCIe registers pass through (the kernel's vfio-pci polices them); MSI-X message control is virtual (enable
///   and function mask are the VMM's to act on); MSI is wholly virtual (`msiState`: enable,
///   vectors, address, data, mask bits; pending bits from `msiPendingProbe`) — the host kernel
///   programs the device's own MSI registers when the VMM enables MSI through VFIO;
/// - extended configuration space (0x100–0xFFF) reads 0: SR-IOV, ARI, resizable BAR and every
///   other extended capability are hidden; accesses beyond 4 KiB, of odd sizes or misaligned read
///   all ones and are ignored.
public final class PassthroughConfigSpace {
    /// PM, MSI, vendor-specific (virtio's modern layout lives there; vfio-pci allows raw writes to
    /// it), PCI Express, MSI-X.
    public static let keptCapabilities: Set<UInt8> = [0x01, 0x05, 0x09, 0x10, 0x11]

    private let backend: PCIConfigBackend
    public let bars: [PCIBARDescription]
    /// Guest-programmed register values of BAR slots 0…5 (flag bits included).
    private var barRegisters = [UInt32](repeating: 0, count: 6)
    public private(set) var command: UInt16 = 0
    private var interruptLine: UInt8 = 0
    /// Capabilities (offset, id) in list order, and the ones kept.
    public let capabilities: [(offset: Int, id: UInt8)]
    private let kept: [Int]
    /// Byte ranges of hidden capabilities.
    private let hidden: [Range<Int>]
    public let msix: MSIXLayout?
    public private(set) var msixEnabled = false
    public private(set) var msixFunctionMasked = false
    public let msi: MSILayout?
    public private(set) var msiState = MSIState()
    /// Whether the guest sees an interrupt pin (INTA), routed by the VMM.
    public let hasINTx: Bool

    /// Told after the guest moved a BAR or switched memory/I/O decoding.
    public var onMappingChange: (() -> Void)?
    /// Told after the guest changed MSI-X enable or function mask.
    public var onMSIXControlChange: (() -> Void)?
    /// Told after the guest wrote any MSI register.
    public var onMSIChange: (() -> Void)?
    /// Asked, when the guest reads the MSI pending bits, whether masked vector N has an interrupt waiting.
    public var msiPendingProbe: ((Int) -> Bool)?
    /// Accesses refused (out of range, odd size, misaligned): counted for tests and diagnostics.
    public private(set) var refusedAccesses = 0

    /// `intxLine`: the GSI the VMM routes the device's INTx to (nil: no INTx for the guest — the
    /// device has no pin, or VFIO cannot signal it).
    public init(backend: PCIConfigBackend, bars: [PCIBARDescription], intxLine: UInt8? = nil) {
        self.backend = backend
        hasINTx = intxLine != nil && backend.configRead(offset: 0x3D, size: 1) & 0xFF != 0
        interruptLine = hasINTx ? intxLine! : 0
        self.bars = bars
        for b in bars {
            barRegisters[b.index] = b.flagBits
        }
        command = UInt16(truncatingIfNeeded: backend.configRead(offset: 0x04, size: 2)) & ~0x7   // decoding and bus mastering off until the guest enables them
        // Walk the capability list: at most 48 entries (256 bytes / 4 each would be 48 after the header), no loops.
        var caps: [(offset: Int, id: UInt8)] = []
        if backend.configRead(offset: 0x06, size: 2) & 0x10 != 0 {
            var p = Int(backend.configRead(offset: 0x34, size: 1) & 0xFC)
            var seen = Set<Int>()
            while p >= 0x40, p < 0x100, caps.count < 48, seen.insert(p).inserted {
                let header = backend.configRead(offset: p, size: 2)
                caps.append((p, UInt8(truncatingIfNeeded: header)))
                p = Int((header >> 8) & 0xFC)
            }
        }
        capabilities = caps
        // MSI is kept when its registers fit in the 256-byte header (a capability running past it
        // is malformed and hidden like any other); only the first MSI and MSI-X capability count.
        var msiLayout: MSILayout?
        if let cap = caps.first(where: { $0.id == 0x05 })?.offset {
            let layout = MSILayout(capability: cap, control: UInt16(truncatingIfNeeded: backend.configRead(offset: cap + 2, size: 2)))
            if layout.end <= 0x100 { msiLayout = layout }
        }
        msi = msiLayout
        let keep = { (c: (offset: Int, id: UInt8)) -> Bool in
            c.id == 0x05 ? c.offset == msiLayout?.capability : Self.keptCapabilities.contains(c.id)
        }
        kept = caps.filter(keep).map(\.offset)
        let sortedOffsets = caps.map(\.offset).sorted()
        hidden = caps.filter { !keep($0) }.map { c in
            let end = sortedOffsets.first { $0 > c.offset } ?? 0x100
            return c.offset..<end
        }
        if let cap = caps.first(where: { $0.id == 0x11 })?.offset {
            let control = backend.configRead(offset: cap + 2, size: 2)
            let table = backend.configRead(offset: cap + 4, size: 4), pba = backend.configRead(offset: cap + 8, size: 4)
            msix = MSIXLayout(capability: cap, tableSize: Int(control & 0x7FF) + 1, tableBAR: Int(table & 7),
                              tableOffset: UInt64(table & ~7), pbaBAR: Int(pba & 7), pbaOffset: UInt64(pba & ~7))
        } else {
            msix = nil
        }
    }

    // MARK: what the guest programmed

    public var memoryDecoding: Bool { command & 0x2 != 0 }
    public var ioDecoding: Bool { command & 0x1 != 0 }

    /// The guest-physical address (or port) of BAR `index` as the guest programmed it.
    public func address(ofBAR index: Int) -> UInt64? {
        guard let b = bars.first(where: { $0.index == index }) else { return nil }
        switch b.kind {
        case .io: return UInt64(barRegisters[index] & ~0x3)
        case .memory32: return UInt64(barRegisters[index] & ~0xF)
        case .memory64: return UInt64(barRegisters[index] & ~0xF) | UInt64(barRegisters[index + 1]) << 32
        }
    }

    /// Places a BAR before the guest runs (what firmware would do); the guest may move it.
    public func assign(bar index: Int, address: UInt64) {
        guard let b = bars.first(where: { $0.index == index }) else { return }
        let mask = ~(b.size - 1)
        let a = address & mask
        barRegisters[index] = UInt32(truncatingIfNeeded: a) & lowMask(b) | b.flagBits
        if b.kind == .memory64 { barRegisters[index + 1] = UInt32(truncatingIfNeeded: a >> 32) }
    }

    private func lowMask(_ b: PCIBARDescription) -> UInt32 {
        let sizeMask = UInt32(truncatingIfNeeded: ~(b.size - 1))
        return sizeMask & (b.kind == .io ? ~0x3 : ~0xF)
    }

    // MARK: guest accesses

    /// A guest configuration read.
    public func read(offset: Int, size: Int) -> UInt32 {
        guard [1, 2, 4].contains(size), offset >= 0, offset % size == 0, offset + size <= 0x1000 else {
            refusedAccesses += 1
            return size >= 4 ? 0xFFFF_FFFF : (1 << (8 * UInt32(max(size, 0)))) &- 1
        }
        if offset >= 0x100 { return 0 }
        if (0..<size).allSatisfy({ virtualByte(offset + $0) == nil }) {
            return backend.configRead(offset: offset, size: size)
        }
        var v: UInt32 = 0
        for i in 0..<size {
            let b = virtualByte(offset + i) ?? UInt8(truncatingIfNeeded: backend.configRead(offset: offset + i, size: 1))
            v |= UInt32(b) << (8 * UInt32(i))
        }
        return v
    }

    /// The byte the guest reads at `o` when the VMM decides it; nil when the device's byte passes.
    private func virtualByte(_ o: Int) -> UInt8? {
        switch o {
        case 0x00..<0x04, 0x08..<0x0E, 0x2C..<0x30, 0x3E..<0x40: return nil
        case 0x04..<0x06: return UInt8(truncatingIfNeeded: command >> (8 * UInt16(o - 0x04)))
        case 0x06:
            return kept.isEmpty ? UInt8(truncatingIfNeeded: backend.configRead(offset: 0x06, size: 1)) & ~0x10 : nil
        case 0x07: return nil
        case 0x0E: return UInt8(truncatingIfNeeded: backend.configRead(offset: 0x0E, size: 1)) & 0x7F  // one function
        case 0x0F: return 0                                                                        // BIST
        case 0x10..<0x28:
            let r = (o - 0x10) / 4
            return UInt8(truncatingIfNeeded: barRegisters[r] >> (8 * UInt32((o - 0x10) % 4)))
        case 0x28..<0x2C, 0x30..<0x34: return 0                                                    // CIS, ROM
        case 0x34: return UInt8(kept.first ?? 0)
        case 0x35..<0x3C: return 0
        case 0x3C: return interruptLine
        case 0x3D: return hasINTx ? 1 : 0                                                          // INTA or none
        default: break
        }
        if let m = msi, o >= m.capability + 2, o < m.end { return msiByte(o - m.capability, layout: m) }
        if let k = kept.firstIndex(where: { $0 + 1 == o }) {
            return UInt8(k + 1 < kept.count ? kept[k + 1] : 0)                                      // re-linked list
        }
        if let m = msix, o == m.capability + 3 {
            let deviceBits = UInt8(truncatingIfNeeded: backend.configRead(offset: o, size: 1)) & 0x07   // table size high bits
            return deviceBits | (msixFunctionMasked ? 0x40 : 0) | (msixEnabled ? 0x80 : 0)
        }
        if hidden.contains(where: { $0.contains(o) }) { return 0 }
        return nil
    }

    /// Byte `r` (from the capability's start) of the virtual MSI capability.
    private func msiByte(_ r: Int, layout m: MSILayout) -> UInt8 {
        let st = msiState
        let data = m.dataOffset - m.capability
        switch r {
        case 2:
            return (st.enabled ? 1 : 0) | UInt8(m.capableLog2 << 1) | UInt8(st.enabledLog2 << 4) | (m.is64Bit ? 0x80 : 0)
        case 3: return m.perVectorMasking ? 0x01 : 0
        case 4..<8: return UInt8(truncatingIfNeeded: st.address >> (8 * UInt64(r - 4)))
        case 8..<12 where m.is64Bit: return UInt8(truncatingIfNeeded: st.address >> (32 + 8 * UInt64(r - 8)))
        case data, data + 1: return UInt8(truncatingIfNeeded: st.data >> (8 * UInt16(r - data)))
        default: break
        }
        guard let mo = m.maskOffset.map({ $0 - m.capability }), r >= mo else { return 0 }   // extended message data: none
        if r < mo + 4 { return UInt8(truncatingIfNeeded: st.mask >> (8 * UInt32(r - mo))) }
        var bits: UInt8 = 0                                                                      // pending bits
        for bit in 0..<8 {
            let v = 8 * (r - mo - 4) + bit
            if v < (1 << m.capableLog2), st.enabled, st.isMasked(v), msiPendingProbe?(v) == true { bits |= 1 << UInt8(bit) }
        }
        return bits
    }

    /// A guest write of byte `b` at `r` (from the capability's start) of the virtual MSI capability.
    private func msiWrite(_ r: Int, _ b: UInt8, layout m: MSILayout) {
        let data = m.dataOffset - m.capability
        switch r {
        case 2:
            msiState.enabled = b & 1 != 0
            msiState.enabledLog2 = min(Int((b >> 4) & 7), m.capableLog2)
        case 4: msiState.address = msiState.address & ~0xFF | UInt64(b & 0xFC)         // dword aligned
        case 5..<8: setByte(&msiState.address, at: r - 4, b)
        case 8..<12 where m.is64Bit: setByte(&msiState.address, at: r - 4, b)
        case data, data + 1:
            let shift = UInt16(8 * (r - data))
            msiState.data = msiState.data & ~(0xFF << shift) | UInt16(b) << shift
        default:
            guard let mo = m.maskOffset.map({ $0 - m.capability }), r >= mo, r < mo + 4 else { return }   // pending: read-only
            let shift = UInt32(8 * (r - mo))
            let implemented: UInt32 = m.capableLog2 == 5 ? .max : (1 << (1 << UInt32(m.capableLog2))) - 1
            msiState.mask = (msiState.mask & ~(0xFF << shift) | UInt32(b) << shift) & implemented
        }
    }

    private func setByte(_ v: inout UInt64, at i: Int, _ b: UInt8) {
        let shift = UInt64(8 * i)
        v = v & ~(0xFF << shift) | UInt64(b) << shift
    }

    /// A guest configuration write.
    public func write(offset: Int, size: Int, value: UInt32) {
        guard [1, 2, 4].contains(size), offset >= 0, offset % size == 0, offset + size <= 0x1000 else {
            refusedAccesses += 1
            return
        }
        if offset >= 0x100 { return }
        let byte = { (i: Int) in UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        // The common case: the whole access falls on registers that pass to the device.
        if (0..<size).allSatisfy({ writeClass(offset + $0) == .pass }) {
            backend.configWrite(offset: offset, size: size, value: value)
            return
        }
        var newCommand = command, barsTouched = Set<Int>(), msixTouched = false, msiTouched = false
        let barsBefore = barRegisters
        for i in 0..<size {
            let o = offset + i, b = byte(i)
            switch writeClass(o) {
            case .ignore: break
            case .pass: backend.configWrite(offset: o, size: 1, value: UInt32(b))
            case .command:
                let shift = UInt16(8 * (o - 0x04))
                newCommand = newCommand & ~(0xFF << shift) | UInt16(b) << shift
            case .bar:
                let r = (o - 0x10) / 4, shift = UInt32(8 * ((o - 0x10) % 4))
                barRegisters[r] = barRegisters[r] & ~(0xFF << shift) | UInt32(b) << shift
                barsTouched.insert(r)
            case .interruptLine: interruptLine = b
            case .msixControl:
                msixFunctionMasked = b & 0x40 != 0
                msixEnabled = b & 0x80 != 0
                msixTouched = true
            case .msi:
                if let m = msi { msiWrite(o - m.capability, b, layout: m) }
                msiTouched = true
            }
        }
        for r in barsTouched.sorted() { normalizeBAR(register: r) }
        var mappingChanged = barRegisters != barsBefore
        if newCommand != command || (0..<size).contains(where: { writeClass(offset + $0) == .command }) {
            let decodeChanged = (newCommand ^ command) & 0x3 != 0
            command = newCommand
            backend.configWrite(offset: 0x04, size: 2, value: UInt32(newCommand))
            if decodeChanged { mappingChanged = true }
        }
        if mappingChanged { onMappingChange?() }
        if msixTouched { onMSIXControlChange?() }
        if msiTouched { onMSIChange?() }
    }

    private enum WriteClass { case ignore, pass, command, bar, interruptLine, msixControl, msi }

    private func writeClass(_ o: Int) -> WriteClass {
        switch o {
        case 0x04, 0x05: return .command
        case 0x06, 0x07: return .pass                              // status: write one to clear
        case 0x0C, 0x0D: return .pass                              // cache line size, latency timer
        case 0x10..<0x28: return .bar
        case 0x3C: return .interruptLine
        case 0x00..<0x40: return .ignore
        default: break
        }
        if kept.contains(where: { $0 == o || $0 + 1 == o }) { return .ignore }      // id and next pointer
        if let m = msix, o == m.capability + 3 { return .msixControl }
        if let m = msi, o >= m.capability + 2, o < m.end { return .msi }
        if let m = msix, o == m.capability + 2 || (m.capability + 4..<m.capability + 12).contains(o) { return .ignore }
        if hidden.contains(where: { $0.contains(o) }) { return .ignore }
        return .pass
    }

    /// Applies the size mask and flag bits to a BAR register the guest wrote (both halves of a
    /// 64-bit BAR go through the lower one); unimplemented BARs stay 0.
    private func normalizeBAR(register r: Int) {
        if let b = bars.first(where: { $0.index == r }) {
            barRegisters[r] = barRegisters[r] & lowMask(b) | b.flagBits
        } else if let b = bars.first(where: { $0.index == r - 1 && $0.kind == .memory64 }) {
            barRegisters[r] &= UInt32(truncatingIfNeeded: ~(b.size - 1) >> 32)
        } else {
            barRegisters[r] = 0
        }
    }
}
