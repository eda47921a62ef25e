import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// Errors of the VFIO layer: a stable code, a message that names the device or group and the fix,
/// and the errno when the kernel gave one.
public struct VFIOError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        /// `/dev/vfio/vfio` (or the group node) is missing: no IOMMU, or vfio-pci not loaded.
        case unavailable
        case permissionDenied = "permission-denied"
        /// The kernel's VFIO API or the type1v2 IOMMU is not what this code speaks.
        case unsupported
        /// Not every device of the group is bound to vfio-pci (or unbound).
        case groupNotViable = "group-not-viable"
        case deviceNotFound = "device-not-found"
        case io
        case invalidArgument = "invalid-argument"
    }

    public var code: Code
    public var message: String
    public var errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { message }

    /// Opens a VFIO or iommufd node read-write. The errors say what to do: `missing` when there is
    /// no such node, `busy` (if given) when it is in use; `subject` names what the node is for.
    static func openNode(_ path: String, missing: String, busy: String? = nil, subject: String? = nil) throws(VFIOError) -> Int32 {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd >= 0 { return fd }
        let e = Glibc.errno
        let name = subject.map { "\(path) for \($0)" } ?? path
        switch e {
        case ENOENT, ENODEV, ENXIO: throw VFIOError(.unavailable, missing, errno: e)
        case EBUSY where busy != nil: throw VFIOError(.io, busy!, errno: e)
        case EACCES, EPERM: throw VFIOError(.permissionDenied, "cannot open \(name): permission denied (root, or the passage group: udev/70-passage.rules)", errno: e)
        default: throw VFIOError(.io, "cannot open \(name): \(String(cString: strerror(e)))", errno: e)
        }
    }

    static func ioctl(_ what: String, _ r: Int) -> VFIOError {
        let e = Int32(-r)
        return VFIOError(e == EACCES || e == EPERM ? .permissionDenied : .io, "\(what) failed: \(String(cString: strerror(e)))", errno: e)
    }
}

/// A VFIO container with the type1v2 IOMMU: the address space the groups attached to it share,
/// where guest RAM is mapped for the devices' DMA.
public final class VFIOContainer: @unchecked Sendable {
    public let fd: Int32
    private var iommuSet = false

    /// Opens the container node and checks the API version and the type1v2 extension.
    public init(path: String = "/dev/vfio/vfio") throws(VFIOError) {
        fd = try VFIOError.openNode(path, missing: "\(path) does not exist: load vfio-pci (modprobe vfio-pci) on a host with the IOMMU on (intel_iommu=on or amd_iommu=on)")
        let version = passage_vfio_ioctl_int(fd, passage_VFIO_GET_API_VERSION, 0)
        guard version == Int(VFIO_API_VERSION) else {
            close(fd)
            throw VFIOError(.unsupported, "\(path) speaks VFIO API \(version), this build speaks \(VFIO_API_VERSION)")
        }
        guard passage_vfio_ioctl_int(fd, passage_VFIO_CHECK_EXTENSION, UInt(VFIO_TYPE1v2_IOMMU)) > 0 else {
            close(fd)
            throw VFIOError(.unsupported, "the kernel's VFIO has no type1v2 IOMMU (VFIO_TYPE1v2_IOMMU); load vfio_iommu_type1")
        }
    }

    deinit { close(fd) }

    /// Selects the type1v2 IOMMU; valid once a group is attached (done by `VFIOGroup.attach`).
    func setIOMMUIfNeeded() throws(VFIOError) {
        guard !iommuSet else { return }
        let r = passage_vfio_ioctl_int(fd, passage_VFIO_SET_IOMMU, UInt(VFIO_TYPE1v2_IOMMU))
        guard r >= 0 else { throw .ioctl("VFIO_SET_IOMMU (type1v2)", r) }
        iommuSet = true
    }

    /// Lets the devices DMA to `size` bytes at `vaddr` through the I/O virtual address `iova`
    /// (guest-physical for a VM). Page-aligned.
    public func mapDMA(iova: UInt64, vaddr: UnsafeMutableRawPointer, size: UInt64, writable: Bool = true) throws(VFIOError) {
        try Self.checkDMARange(iova: iova, vaddr: vaddr, size: size)
        var map = vfio_iommu_type1_dma_map()
        map.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_map>.size)
        map.flags = UInt32(VFIO_DMA_MAP_FLAG_READ) | (writable ? UInt32(VFIO_DMA_MAP_FLAG_WRITE) : 0)
        map.vaddr = UInt64(UInt(bitPattern: vaddr))
        map.iova = iova
        map.size = size
        let r = passage_vfio_ioctl(fd, passage_VFIO_IOMMU_MAP_DMA, &map)
        guard r >= 0 else { throw .ioctl("VFIO_IOMMU_MAP_DMA iova 0x\(String(iova, radix: 16)) size 0x\(String(size, radix: 16))", r) }
    }

    /// A DMA mapping must be page-aligned and non-empty (container and iommufd alike).
    static func checkDMARange(iova: UInt64, vaddr: UnsafeMutableRawPointer, size: UInt64) throws(VFIOError) {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        guard iova % page == 0, size % page == 0, UInt64(UInt(bitPattern: vaddr)) % page == 0, size > 0 else {
            throw VFIOError(.invalidArgument, "DMA mapping iova 0x\(String(iova, radix: 16)) size 0x\(String(size, radix: 16)): must be page-aligned and non-empty")
        }
    }

    /// Removes DMA mappings in [iova, iova+size); returns the bytes unmapped.
    @discardableResult
    public func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var unmap = vfio_iommu_type1_dma_unmap()
        unmap.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_unmap>.size)
        unmap.iova = iova
        unmap.size = size
        let r = passage_vfio_ioctl(fd, passage_VFIO_IOMMU_UNMAP_DMA, &unmap)
        guard r >= 0 else { throw .ioctl("VFIO_IOMMU_UNMAP_DMA iova 0x\(String(iova, radix: 16))", r) }
        return unmap.size
    }
}

/// An IOMMU group opened through `/dev/vfio/N`.
public final class VFIOGroup: @unchecked Sendable {
    public let number: Int
    public let fd: Int32
    private var container: VFIOContainer?

    /// Opens the group and checks that it is viable (every member bound to vfio-pci or unbound).
    public init(number: Int, directory: String = "/dev/vfio") throws(VFIOError) {
        let path = "\(directory)/\(number)"
        let fd = try VFIOError.openNode(path, missing: "\(path) does not exist: bind the group's devices to vfio-pci first (passage bind --group ADDRESS)",
                                        busy: "IOMMU group \(number) is already open elsewhere (another VMM or process holds \(path))")
        self.number = number
        self.fd = fd
        guard try isViable() else {
            close(fd)
            throw VFIOError(.groupNotViable, "IOMMU group \(number) is not viable: some member is bound to a host driver; bind the whole group (passage bind --group) or claim it")
        }
    }

    deinit {
        if container != nil { _ = passage_vfio_ioctl_int(fd, passage_VFIO_GROUP_UNSET_CONTAINER, 0) }
        close(fd)
    }

    public func isViable() throws(VFIOError) -> Bool {
        var status = vfio_group_status()
        status.argsz = UInt32(MemoryLayout<vfio_group_status>.size)
        let r = passage_vfio_ioctl(fd, passage_VFIO_GROUP_GET_STATUS, &status)
        guard r >= 0 else { throw .ioctl("VFIO_GROUP_GET_STATUS on group \(number)", r) }
        return status.flags & UInt32(VFIO_GROUP_FLAGS_VIABLE) != 0
    }

    /// Puts the group in `container` (selecting type1v2 for the container with the first group).
    public func attach(to container: VFIOContainer) throws(VFIOError) {
        var cfd = container.fd
        let r = passage_vfio_ioctl(fd, passage_VFIO_GROUP_SET_CONTAINER, &cfd)
        guard r >= 0 else { throw .ioctl("VFIO_GROUP_SET_CONTAINER for group \(number)", r) }
        self.container = container
        try container.setIOMMUIfNeeded()
    }

    /// The device `address` (`0000:01:00.1`) of this group; the group must be in a container.
    public func device(_ address: String) throws(VFIOError) -> VFIODevice {
        guard container != nil else { throw VFIOError(.invalidArgument, "attach IOMMU group \(number) to a container before opening \(address)") }
        let r = address.withCString { passage_vfio_ioctl(fd, passage_VFIO_GROUP_GET_DEVICE_FD, UnsafeMutableRawPointer(mutating: $0)) }
        guard r >= 0 else {
            if -r == Int(EINVAL) || -r == Int(ENODEV) {
                throw VFIOError(.deviceNotFound, "\(address) is not a device of IOMMU group \(number) (or not bound to vfio-pci)", errno: Int32(-r))
            }
            throw .ioctl("VFIO_GROUP_GET_DEVICE_FD \(address)", r)
        }
        return try VFIODevice(fd: Int32(r), address: address, owner: self)
    }
}
