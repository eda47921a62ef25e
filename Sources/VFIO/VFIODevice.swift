import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// A VFIO device file descriptor: its regions (BARs, ROM, configuration space), interrupts,
/// reset. Owns the descriptor; keeps what it came from (its `VFIOGroup`, or the `IOMMUFD` its
/// cdev is bound to) open while it lives.
public final class VFIODevice: @unchecked Sendable {
    public let fd: Int32
    public let address: String
    public let info: Info
    /// The device's id in its iommufd (opened through the cdev), nil for a device of a group.
    public let deviceID: UInt32?
    private let owner: AnyObject

    public struct Info: Sendable, Equatable {
        public var flags: UInt32
        public var regions: UInt32
        public var irqs: UInt32
        public var isPCI: Bool { flags & UInt32(VFIO_DEVICE_FLAGS_PCI) != 0 }
        public var canReset: Bool { flags & UInt32(VFIO_DEVICE_FLAGS_RESET) != 0 }
    }

    /// VFIO's fixed PCI region indexes.
    public enum PCIRegion: UInt32, Sendable {
        case bar0 = 0, bar1, bar2, bar3, bar4, bar5, rom, config, vga
    }

    /// VFIO's PCI interrupt indexes.
    public enum PCIInterrupt: UInt32, Sendable {
        case intx = 0, msi, msix, err, req
    }

    public struct Region: Sendable, Equatable {
        public var index: UInt32
        public var flags: UInt32
        public var size: UInt64
        /// Where the region starts in the device file (pread/pwrite/mmap offset).
        public var offset: UInt64
        /// Parts that may be mmapped when not all of it may (the MSI-X table's page is left out).
        public var sparseAreas: [SparseArea]
        /// The kernel allows mmapping the MSI-X table's page too (VFIO_REGION_INFO_CAP_MSIX_MAPPABLE).
        public var msixMappable: Bool

        public var readable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_READ) != 0 }
        public var writable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_WRITE) != 0 }
        public var mappable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_MMAP) != 0 }
    }

    public struct SparseArea: Sendable, Equatable {
        public var offset: UInt64
        public var size: UInt64
    }

    public struct Interrupt: Sendable, Equatable {
        public var index: UInt32
        public var flags: UInt32
        public var count: UInt32
        public var eventfdCapable: Bool { flags & UInt32(VFIO_IRQ_INFO_EVENTFD) != 0 }
        public var maskable: Bool { flags & UInt32(VFIO_IRQ_INFO_MASKABLE) != 0 }
    }

    init(fd: Int32, address: String, owner: AnyObject, deviceID: UInt32? = nil) throws(VFIOError) {
        self.fd = fd
        self.address = address
        self.owner = owner
        self.deviceID = deviceID
        var i = vfio_device_info()
        i.argsz = UInt32(MemoryLayout<vfio_device_info>.size)
        let r = passage_vfio_ioctl(fd, passage_VFIO_DEVICE_GET_INFO, &i)
        guard r >= 0 else {
            close(fd)
            throw .ioctl("VFIO_DEVICE_GET_INFO \(address)", r)
        }
        info = Info(flags: i.flags, regions: i.num_regions, irqs: i.num_irqs)
    }

    deinit { close(fd) }

    /// A region's size, offset, flags and capability chain (asked twice when the kernel needs
    /// room for the capabilities).
    public func region(_ index: UInt32) throws(VFIOError) -> Region {
        guard index < info.regions else { throw VFIOError(.invalidArgument, "\(address) has \(info.regions) regions; there is no region \(index)") }
        var size = MemoryLayout<vfio_region_info>.size
        for _ in 0..<2 {
            var buffer = [UInt8](repeating: 0, count: size)
            let r = buffer.withUnsafeMutableBytes { raw -> Int in
                let p = raw.baseAddress!.assumingMemoryBound(to: vfio_region_info.self)
                p.pointee.argsz = UInt32(size)
                p.pointee.index = index
                return passage_vfio_ioctl(fd, passage_VFIO_DEVICE_GET_REGION_INFO, raw.baseAddress!)
            }
            guard r >= 0 else { throw .ioctl("VFIO_DEVICE_GET_REGION_INFO \(address) region \(index)", r) }
            let info = buffer.withUnsafeBytes { $0.load(as: vfio_region_info.self) }
            if info.argsz > UInt32(size) { size = Int(info.argsz); continue }
            var region = Region(index: index, flags: info.flags, size: info.size, offset: info.offset, sparseAreas: [], msixMappable: false)
            if info.flags & UInt32(VFIO_REGION_INFO_FLAG_CAPS) != 0, info.cap_offset != 0 {
                Self.parseCapabilities(buffer, first: Int(info.cap_offset), into: &region)
            }
            return region
        }
        throw VFIOError(.io, "VFIO_DEVICE_GET_REGION_INFO \(address) region \(index): the kernel kept asking for more room")
    }

    /// Walks a region-info capability chain (`vfio_info_cap_header` id/version/next) inside
    /// `buffer`; unknown capabilities are skipped; a chain that leaves the buffer or loops ends.
    static func parseCapabilities(_ buffer: [UInt8], first: Int, into region: inout Region) {
        var offset = first
        var seen = Set<Int>()
        while offset >= MemoryLayout<vfio_region_info>.size, offset + 8 <= buffer.count, seen.insert(offset).inserted {
            let id = buffer.load16(offset), next = Int(buffer.load32(offset + 4))
            switch Int32(id) {
            case Int32(VFIO_REGION_INFO_CAP_SPARSE_MMAP):
                guard offset + 16 <= buffer.count else { return }
                let n = Int(buffer.load32(offset + 8))
                for i in 0..<n {
                    let at = offset + 16 + i * 16
                    guard at + 16 <= buffer.count else { break }
                    region.sparseAreas.append(SparseArea(offset: buffer.load64(at), size: buffer.load64(at + 8)))
                }
            case Int32(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE):
                region.msixMappable = true
            default:
                break
            }
            guard next != 0 else { return }
            offset = next
        }
    }

    public func interrupt(_ index: UInt32) throws(VFIOError) -> Interrupt {
        var i = vfio_irq_info()
        i.argsz = UInt32(MemoryLayout<vfio_irq_info>.size)
        i.index = index
        let r = passage_vfio_ioctl(fd, passage_VFIO_DEVICE_GET_IRQ_INFO, &i)
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_GET_IRQ_INFO \(address) index \(index)", r) }
        return Interrupt(index: index, flags: i.flags, count: i.count)
    }

    /// Reads `count` bytes of a region (configuration space: `.config`) at `offset`.
    public func read(_ region: Region, at offset: UInt64, count: Int) throws(VFIOError) -> [UInt8] {
        guard offset + UInt64(count) <= region.size else {
            throw VFIOError(.invalidArgument, "reading \(count) bytes at 0x\(String(offset, radix: 16)) of \(address) region \(region.index) (size 0x\(String(region.size, radix: 16)))")
        }
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(region.offset + offset)) }
        guard n == count else { throw VFIOError(.io, "reading \(address) region \(region.index) at 0x\(String(offset, radix: 16)): \(n < 0 ? String(cString: strerror(errno)) : "short read")", errno: n < 0 ? errno : nil) }
        return out
    }

    public func write(_ region: Region, at offset: UInt64, _ bytes: [UInt8]) throws(VFIOError) {
        guard offset + UInt64(bytes.count) <= region.size else {
            throw VFIOError(.invalidArgument, "writing \(bytes.count) bytes at 0x\(String(offset, radix: 16)) of \(address) region \(region.index) (size 0x\(String(region.size, radix: 16)))")
        }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, bytes.count, off_t(region.offset + offset)) }
        guard n == bytes.count else { throw VFIOError(.io, "writing \(address) region \(region.index) at 0x\(String(offset, radix: 16)): \(n < 0 ? String(cString: strerror(errno)) : "short write")", errno: n < 0 ? errno : nil) }
    }

    /// Maps `size` bytes of a region from `offset` (a whole BAR, or one of its sparse areas).
    public func map(_ region: Region, offset: UInt64 = 0, size: UInt64? = nil) throws(VFIOError) -> VFIOMapping {
        let length = size ?? region.size
        guard region.mappable else { throw VFIOError(.invalidArgument, "\(address) region \(region.index) cannot be mmapped") }
        guard length > 0, offset + length <= region.size else { throw VFIOError(.invalidArgument, "mapping \(address) region \(region.index) at 0x\(String(offset, radix: 16)) + 0x\(String(length, radix: 16)): outside the region") }
        let prot = (region.readable ? PROT_READ : 0) | (region.writable ? PROT_WRITE : 0)
        guard let p = mmap(nil, Int(length), prot, MAP_SHARED, fd, off_t(region.offset + offset)), p != MAP_FAILED else {
            throw VFIOError(.io, "mmap of \(address) region \(region.index): \(String(cString: strerror(errno)))", errno: errno)
        }
        return VFIOMapping(base: p, size: Int(length))
    }

    /// Routes vectors `start…` of `index` to these eventfds (-1 leaves one unrouted).
    public func setInterruptEventFDs(_ index: PCIInterrupt, start: UInt32 = 0, _ fds: [Int32]) throws(VFIOError) {
        let r = fds.withUnsafeBufferPointer { passage_vfio_set_irq_eventfds(fd, index.rawValue, start, UInt32($0.count), $0.baseAddress) }
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_SET_IRQS \(address) \(index) (\(fds.count) eventfds)", Int(r)) }
    }

    /// Gives vectors `start…` of `index` eventfds whose signal unmasks them: for INTx, the
    /// resample eventfd KVM signals when the guest ends the level interrupt (its EOI).
    public func setUnmaskEventFDs(_ index: PCIInterrupt, start: UInt32 = 0, _ fds: [Int32]) throws(VFIOError) {
        let r = fds.withUnsafeBufferPointer { passage_vfio_set_irq_unmask_eventfds(fd, index.rawValue, start, UInt32($0.count), $0.baseAddress) }
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_SET_IRQS \(address) \(index) unmask (\(fds.count) eventfds)", Int(r)) }
    }

    public func disableInterrupts(_ index: PCIInterrupt) throws(VFIOError) {
        let r = passage_vfio_disable_irqs(fd, index.rawValue)
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_SET_IRQS \(address) disable \(index)", Int(r)) }
    }

    /// A function a bus (hot) reset of this device would reset as well (this one included).
    public struct ResetDependent: Sendable, Equatable {
        /// Its IOMMU group number; for a device opened through its cdev, its device id in the
        /// caller's iommufd instead (0: owned but not bound there; `notOwned`: someone else's).
        public var id: UInt32
        public var address: String

        public static let notOwned: UInt32 = 0xFFFF_FFFF
    }

    /// What a hot reset of this device involves.
    public struct HotResetInfo: Sendable, Equatable {
        public var dependents: [ResetDependent]
        /// The ids are device ids (the device was opened through its cdev), not group numbers.
        public var byDeviceID: Bool
        /// (cdev) Every dependent is owned by this device's iommufd: `hotReset(groupFDs: [])` works.
        public var allOwned: Bool
    }

    /// The functions a hot reset (secondary bus or slot reset) of this device affects: every one
    /// must be in a group the caller holds (or, through the cdev, bound to the same iommufd) for
    /// `hotReset`. Throws when no such reset is possible.
    public func hotResetInfo() throws(VFIOError) -> HotResetInfo {
        var room = 8
        while true {
            var groups = [UInt32](repeating: 0, count: room), addresses = [UInt32](repeating: 0, count: room)
            var flags: UInt32 = 0
            let n = passage_vfio_hot_reset_info(fd, &groups, &addresses, UInt32(room), &flags)
            guard n >= 0 else { throw .ioctl("VFIO_DEVICE_GET_PCI_HOT_RESET_INFO \(address)", Int(n)) }
            guard Int(n) <= room else { room = Int(n); continue }
            let dependents = (0..<Int(n)).map { i in
                let a = addresses[i]
                func hex(_ v: UInt32, _ width: Int) -> String {
                    let digits = String(v, radix: 16)
                    return String(repeating: "0", count: max(0, width - digits.count)) + digits
                }
                let text = "\(hex(a >> 16, 4)):\(hex((a >> 8) & 0xFF, 2)):\(hex((a >> 3) & 0x1F, 2)).\(hex(a & 7, 1))"
                return ResetDependent(id: groups[i], address: text)
            }
            return HotResetInfo(dependents: dependents,
                                byDeviceID: flags & PASSAGE_VFIO_HOT_RESET_FLAG_DEV_ID != 0,
                                allOwned: flags & PASSAGE_VFIO_HOT_RESET_FLAG_DEV_ID_OWNED != 0)
        }
    }

    /// `VFIO_DEVICE_PCI_HOT_RESET`: resets the bus (or slot) below this device; `groupFDs` must
    /// hold the group of every function `hotResetInfo()` lists, or be empty for a device opened
    /// through its cdev (the kernel then checks that its iommufd owns them all).
    public func hotReset(groupFDs: [Int32]) throws(VFIOError) {
        let r = groupFDs.withUnsafeBufferPointer { passage_vfio_hot_reset(fd, $0.baseAddress, UInt32($0.count)) }
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_PCI_HOT_RESET \(address) (\(groupFDs.count) groups)", Int(r)) }
    }

    public func reset() throws(VFIOError) {
        guard info.canReset else { throw VFIOError(.unsupported, "\(address) has no reset VFIO can do (no FLR, PM or bus reset)") }
        let r = passage_vfio_ioctl_int(fd, passage_VFIO_DEVICE_RESET, 0)
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_RESET \(address)", r) }
    }
}

/// An mmapped piece of a device region; unmapped when released.
public final class VFIOMapping: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int

    init(base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    deinit { munmap(base, size) }

    /// A 32-bit register read (MMIO: one access, volatile through the pointer).
    public func read32(_ offset: Int) -> UInt32 {
        precondition(offset >= 0 && offset + 4 <= size && offset % 4 == 0)
        return (base + offset).assumingMemoryBound(to: UInt32.self).pointee
    }
}

extension [UInt8] {
    func load16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    func load32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(self[at + $1]) << (8 * $1) } }
    func load64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(self[at + $1]) << (8 * $1) } }
}
