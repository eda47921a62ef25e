import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// An iommufd context (`/dev/iommu`, Linux 6.2+) with one I/O address space (IOAS): the
/// successor of the type1 container. Devices opened through their VFIO cdev
/// (`VFIODeviceFile`) are bound to the context and attached to the IOAS; guest RAM is mapped into
/// the IOAS for their DMA, as `VFIOContainer.mapDMA` does for a container.
public final class IOMMUFD: @unchecked Sendable {
    public let fd: Int32
    /// The IOAS every device of this context is attached to.
    public let ioas: UInt32
    public let path: String

    /// Opens `path` and allocates the IOAS.
    public init(path: String = "/dev/iommu") throws(VFIOError) {
        let fd = try VFIOError.openNode(path, missing: "\(path) does not exist: this kernel has no iommufd (CONFIG_IOMMUFD; modprobe iommufd), use the type1 container (--vfio-backend type1)")
        var alloc = passage_iommu_ioas_alloc()
        alloc.size = UInt32(MemoryLayout<passage_iommu_ioas_alloc>.size)
        let r = passage_vfio_ioctl(fd, passage_IOMMU_IOAS_ALLOC, &alloc)
        guard r >= 0 else {
            close(fd)
            throw .ioctl("IOMMU_IOAS_ALLOC on \(path)", r)
        }
        self.fd = fd
        self.ioas = alloc.out_ioas_id
        self.path = path
    }

    deinit { close(fd) }

    /// Lets the devices DMA to `size` bytes at `vaddr` through `iova` (guest-physical for a VM):
    /// `IOMMU_IOAS_MAP` at that fixed IOVA. The pages are pinned now if a device is attached to the
    /// IOAS (else when the first one attaches). Page-aligned.
    public func mapDMA(iova: UInt64, vaddr: UnsafeMutableRawPointer, size: UInt64, writable: Bool = true) throws(VFIOError) {
        try VFIOContainer.checkDMARange(iova: iova, vaddr: vaddr, size: size)
        var map = passage_iommu_ioas_map()
        map.size = UInt32(MemoryLayout<passage_iommu_ioas_map>.size)
        map.flags = PASSAGE_IOMMU_IOAS_MAP_FIXED_IOVA | PASSAGE_IOMMU_IOAS_MAP_READABLE | (writable ? PASSAGE_IOMMU_IOAS_MAP_WRITEABLE : 0)
        map.ioas_id = ioas
        map.user_va = UInt64(UInt(bitPattern: vaddr))
        map.length = size
        map.iova = iova
        let r = passage_vfio_ioctl(fd, passage_IOMMU_IOAS_MAP, &map)
        guard r >= 0 else { throw .ioctl("IOMMU_IOAS_MAP iova 0x\(String(iova, radix: 16)) size 0x\(String(size, radix: 16))", r) }
    }

    /// Removes the mappings in [iova, iova+size); returns the bytes unmapped.
    @discardableResult
    public func unmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var unmap = passage_iommu_ioas_unmap()
        unmap.size = UInt32(MemoryLayout<passage_iommu_ioas_unmap>.size)
        unmap.ioas_id = ioas
        unmap.iova = iova
        unmap.length = size
        let r = passage_vfio_ioctl(fd, passage_IOMMU_IOAS_UNMAP, &unmap)
        guard r >= 0 else { throw .ioctl("IOMMU_IOAS_UNMAP iova 0x\(String(iova, radix: 16))", r) }
        return unmap.length
    }

    /// The VFIO cdev of `address` (`/dev/vfio/devices/vfioN`, named by the function's
    /// `vfio-dev/vfioN` in sysfs), or nil when the function has none: not bound to vfio-pci, or a
    /// kernel without `CONFIG_VFIO_DEVICE_CDEV`.
    public static func deviceNode(of address: String, sysfs: String = "/sys", dev: String = "/dev") -> String? {
        guard let dir = opendir("\(sysfs)/bus/pci/devices/\(address)/vfio-dev") else { return nil }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix("vfio"), Int(name.dropFirst(4)) != nil { return "\(dev)/vfio/devices/\(name)" }
        }
        return nil
    }

    /// Whether iommufd can serve all of `addresses`: `iommu` opens for reading and writing, and each
    /// function has a cdev node that does too.
    public static func canServe(_ addresses: [String], sysfs: String = "/sys", dev: String = "/dev") -> Bool {
        guard access("\(dev)/iommu", R_OK | W_OK) == 0 else { return false }
        return addresses.allSatisfy { a in
            guard let node = deviceNode(of: a, sysfs: sysfs, dev: dev) else { return false }
            return access(node, R_OK | W_OK) == 0
        }
    }
}

/// A VFIO device opened through its cdev (`/dev/vfio/devices/vfioN`, Linux 6.6+), not yet bound
/// to an iommufd: all it can do before `bind` is be told to KVM (`KVM_DEV_VFIO_FILE_ADD`, which
/// the kernel wants before the bind).
public final class VFIODeviceFile: @unchecked Sendable {
    public let address: String
    public let path: String
    private(set) var fd: Int32

    /// Opens the cdev of `address` (found through sysfs).
    public init(address: String, sysfs: String = "/sys", dev: String = "/dev") throws(VFIOError) {
        guard let path = IOMMUFD.deviceNode(of: address, sysfs: sysfs, dev: dev) else {
            throw VFIOError(.unavailable, "\(address) has no VFIO device file (no \(sysfs)/bus/pci/devices/\(address)/vfio-dev): bind it to vfio-pci on a kernel with CONFIG_VFIO_DEVICE_CDEV, or use the type1 container (--vfio-backend type1)")
        }
        let fd = try VFIOError.openNode(path, missing: "\(path) (the VFIO device file of \(address)) is gone: was it unbound from vfio-pci?",
                                        busy: "\(address) (\(path)) is already in use: another VMM, or its IOMMU group is open through /dev/vfio",
                                        subject: address)
        self.address = address
        self.path = path
        self.fd = fd
    }

    /// The descriptor, to hand to KVM before `bind`.
    public var descriptor: Int32 { fd }

    deinit { if fd >= 0 { close(fd) } }

    /// `VFIO_DEVICE_BIND_IOMMUFD` to `iommufd`, `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to its IOAS, then the
    /// device's info: the usable device. The kernel refuses the bind when a device of the same
    /// IOMMU group is in use elsewhere (the group must be viable). The descriptor moves to the
    /// returned device.
    public func bind(to iommufd: IOMMUFD) throws(VFIOError) -> VFIODevice {
        var bind = passage_vfio_device_bind_iommufd()
        bind.argsz = UInt32(MemoryLayout<passage_vfio_device_bind_iommufd>.size)
        bind.iommufd = iommufd.fd
        var r = passage_vfio_ioctl(fd, passage_VFIO_DEVICE_BIND_IOMMUFD, &bind)
        guard r >= 0 else {
            if -r == Int(EBUSY) {
                throw VFIOError(.groupNotViable, "\(address): VFIO_DEVICE_BIND_IOMMUFD refused (device busy): a device of its IOMMU group is bound to a host driver or in use; bind the whole group (passage bind --group \(address)) or claim it", errno: EBUSY)
            }
            if -r == Int(EPERM) {
                throw VFIOError(.permissionDenied, "\(address): VFIO_DEVICE_BIND_IOMMUFD refused (operation not permitted): the IOMMU cannot isolate the device's MSIs (interrupt remapping off: intel_iommu=on with intremap, or amd_iommu=on) — iommufd then needs iommufd.allow_unsafe_interrupts=1, which is separate from vfio_iommu_type1's; or a device of its group is held elsewhere. --vfio-backend type1 uses the container instead", errno: EPERM)
            }
            if -r == Int(EINVAL) {
                throw VFIOError(.io, "\(address): VFIO_DEVICE_BIND_IOMMUFD refused (Invalid argument): its VFIO device file is most likely bound in another process already (another VMM), and a device can be bound only once", errno: EINVAL)
            }
            throw .ioctl("VFIO_DEVICE_BIND_IOMMUFD \(address)", r)
        }
        var attach = passage_vfio_device_attach_iommufd_pt()
        attach.argsz = UInt32(MemoryLayout<passage_vfio_device_attach_iommufd_pt>.size)
        attach.pt_id = iommufd.ioas
        r = passage_vfio_ioctl(fd, passage_VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach)
        guard r >= 0 else { throw .ioctl("VFIO_DEVICE_ATTACH_IOMMUFD_PT \(address) to IOAS \(iommufd.ioas)", r) }
        let owned = fd
        fd = -1
        return try VFIODevice(fd: owned, address: address, owner: iommufd, deviceID: bind.out_devid)
    }
}
