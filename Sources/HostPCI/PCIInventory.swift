import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// Reads the PCI devices, IOMMU groups and SR-IOV topology under a sysfs root. Read-only.
public struct PCIInventory: Sendable {
    public let root: SysfsRoot
    /// Look names up in pci.ids through libpci.
    public var lookUpNames: Bool

    public init(root: SysfsRoot = .system, lookUpNames: Bool = true) {
        self.root = root
        self.lookUpNames = lookUpNames
    }

    /// Every PCI function under the root, sorted by address.
    public func devices() throws(HostPCIError) -> [PCIDevice] {
        let addresses = try openDevicesDirectory().entries().compactMap(PCIAddress.fromSysfsName).sorted()
        // Reading a device is a few dozen small syscalls; on a large host that dominates, so the
        // addresses are split across up to 4 threads, each with its own directory handle and libpci handle.
        let workers = max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 4, addresses.count / 128))
        var slots = [PCIDevice?](repeating: nil, count: addresses.count)
        let root = self.root
        slots.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let out = buffer
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                guard let bus = SysfsDirectory(root.pciDevicesPath) else { return }
                let library = PCILibrary(root: root)
                for i in stride(from: worker, to: addresses.count, by: workers) {
                    out[i] = Self.read(addresses[i], root: root, bus: bus, library: library)
                }
            }
        }
        var devices = slots.compactMap { $0 }
        if lookUpNames {
            let library = PCILibrary(root: root)
            for i in devices.indices { devices[i].names = library.names(of: devices[i]) }
        }
        Self.linkVirtualFunctions(&devices)
        return devices
    }

    /// One device, with the same facts as `devices()` gives for it (including its VF index).
    public func device(_ address: PCIAddress) throws(HostPCIError) -> PCIDevice {
        let bus = try openDevicesDirectory()
        let library = PCILibrary(root: root)
        guard var device = Self.read(address, root: root, bus: bus, library: library) else {
            throw .deviceNotFound(address, root: root)
        }
        if lookUpNames { device.names = library.names(of: device) }
        if let pf = device.physfn, let pfDir = SysfsDirectory(root.devicePath(pf)) {
            device.vfIndex = Self.vfIndex(of: address, pf: pf, pfDir: pfDir)
        }
        return device
    }

    /// IOMMU groups as the kernel lists them in `kernel/iommu_groups`, with each member's facts
    /// taken from `devices` (pass the result of `devices()`).
    public func groups(devices: [PCIDevice]) -> [IOMMUGroup] {
        guard let dir = SysfsDirectory(root.iommuGroupsPath) else {
            // No IOMMU (or no groups directory in a fixture): derive from the devices' links.
            return IOMMUGroup.derive(from: devices)
        }
        let byAddress = Dictionary(devices.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        var groups: [IOMMUGroup] = []
        for name in dir.entries() {
            guard let number = Int(name), let members = SysfsDirectory(root.iommuGroupPath(number) + "/devices") else { continue }
            var pci: [PCIDevice] = []
            var other: [String] = []
            for entry in members.entries().sorted() {
                if let a = PCIAddress.fromSysfsName(entry), let d = byAddress[a] { pci.append(d) } else { other.append(entry) }
            }
            pci.sort { $0.address < $1.address }
            groups.append(IOMMUGroup(number: number, devices: pci, otherMembers: other))
        }
        return groups.sorted { $0.number < $1.number }
    }

    private func openDevicesDirectory() throws(HostPCIError) -> SysfsDirectory {
        guard let dir = SysfsDirectory(root.pciDevicesPath) else {
            let e = errno
            throw HostPCIError(
                code: .sysfsUnavailable,
                message: "cannot read \(root.pciDevicesPath): \(String(cString: strerror(e))); "
                    + (root.isSystem ? "is sysfs mounted on /sys?" : "--sysfs-root must name a sysfs-shaped tree (ROOT/bus/pci/devices)"),
                errno: e)
        }
        return dir
    }

    /// Reads one device (names are left empty); nil when its directory does not exist.
    static func read(_ address: PCIAddress, root: SysfsRoot, bus: borrowing SysfsDirectory, library: PCILibrary) -> PCIDevice? {
        guard let dir = SysfsDirectory(root.devicePath(address)) else { return nil }
        let config = dir.readBytes("config", limit: 256) ?? []
        func configWord(_ offset: Int) -> UInt16? {
            offset + 1 < config.count ? UInt16(config[offset]) | UInt16(config[offset + 1]) << 8 : nil
        }
        let vendor = dir.readHex("vendor").map { UInt16(truncatingIfNeeded: $0) } ?? configWord(0) ?? 0xffff
        let device = dir.readHex("device").map { UInt16(truncatingIfNeeded: $0) } ?? configWord(2) ?? 0xffff
        let classCode = dir.readHex("class").map { UInt32(truncatingIfNeeded: $0) }
            ?? (config.count >= 12 ? UInt32(config[9]) | UInt32(config[10]) << 8 | UInt32(config[11]) << 16 : 0)
        let revision = dir.readHex("revision").map { UInt8(truncatingIfNeeded: $0) } ?? (config.count > 8 ? config[8] : nil)
        let subVendor = dir.readHex("subsystem_vendor").map { UInt16(truncatingIfNeeded: $0) }
        let subDevice = dir.readHex("subsystem_device").map { UInt16(truncatingIfNeeded: $0) }
        let headerType = config.count > 0x0e ? config[0x0e] & 0x7f : nil

        var bars: [BAR] = []
        var vfBars: [BAR] = []
        var romSize: UInt64?
        if let resource = dir.readBytes("resource") {
            for (i, bar) in BAR.parse(resource: resource) {
                switch i {
                case 0...5: bars.append(bar)
                case 6: romSize = bar.size
                case 7...12: vfBars.append(BAR(index: i - 7, start: bar.start, size: bar.size, kind: bar.kind, prefetchable: bar.prefetchable))
                default: break
                }
            }
        }

        let capabilities = library.capabilities(of: address, config: config)
        var sriov: SRIOVPhysicalFunction?
        // The kernel creates sriov_* only for functions with the SR-IOV capability: skip the lookup for
        // the others (most of a large host's functions are VFs), unless the capabilities are unknown.
        if capabilities == nil || capabilities?.sriov != nil, let total = dir.readInt("sriov_totalvfs") {
            sriov = SRIOVPhysicalFunction(
                totalVFs: total,
                numVFs: dir.readInt("sriov_numvfs") ?? 0,
                driversAutoprobe: dir.readInt("sriov_drivers_autoprobe").map { $0 != 0 },
                vfOffset: dir.readInt("sriov_offset"),
                vfStride: dir.readInt("sriov_stride"),
                vfDeviceID: dir.readHex("sriov_vf_device").map { UInt16(truncatingIfNeeded: $0) },
                vfs: Self.virtualFunctionLinks(dir),
                vfBars: vfBars)
        }

        let override = dir.readString("driver_override")
        let upstream: [PCIAddress] = bus.readLinkBytes(address.description).map { target in
            target.split(separator: UInt8(ascii: "/")).compactMap { PCIAddress.fromSysfsName(bytes: $0) }.filter { $0 != address }
        } ?? []

        return PCIDevice(
            address: address,
            vendorID: vendor,
            deviceID: device,
            subsystemVendorID: subVendor,
            subsystemDeviceID: subDevice,
            classCode: classCode,
            revision: revision,
            names: PCINames(),
            driver: dir.readLinkName("driver"),
            driverOverride: (override == nil || override == "" || override == "(null)") ? nil : override,
            iommuGroup: dir.readLinkBytes("iommu_group").flatMap { parseDecimal(lastComponent($0)) },
            numaNode: dir.readInt("numa_node").flatMap { $0 < 0 ? nil : $0 },
            bars: bars,
            romSize: romSize,
            capabilities: capabilities,
            resetMethods: dir.readString("reset_method").map { $0.split(separator: " ").map(String.init) },
            sriov: sriov,
            physfn: dir.readLinkBytes("physfn").flatMap { PCIAddress.fromSysfsName(bytes: lastComponent($0)) },
            vfIndex: nil,
            upstream: upstream,
            isBridge: headerType == 1 || classCode >> 8 == 0x0604)
    }

    /// A PF's `virtfnN` links, by index.
    static func virtualFunctionLinks(_ dir: borrowing SysfsDirectory) -> [VirtualFunctionLink] {
        var links: [VirtualFunctionLink] = []
        for name in dir.entries() where name.hasPrefix("virtfn") {
            guard let index = Int(name.dropFirst(6)), let target = dir.readLinkBytes(name),
                  let address = PCIAddress.fromSysfsName(bytes: lastComponent(target)) else { continue }
            links.append(VirtualFunctionLink(index: index, address: address))
        }
        return links.sorted { $0.index < $1.index }
    }

    /// A VF's index among its PF's: computed from the routing IDs (VF RID = PF RID + offset +
    /// index × stride) and confirmed by the one `virtfnN` link, so that a PF with 255 VFs costs
    /// one readlink, not 255; every link is read only when the arithmetic does not hold.
    static func vfIndex(of vf: PCIAddress, pf: PCIAddress, pfDir: borrowing SysfsDirectory) -> Int? {
        func rid(_ a: PCIAddress) -> Int { Int(a.bus) << 8 | Int(a.device) << 3 | Int(a.function) }
        if vf.domain == pf.domain, let offset = pfDir.readInt("sriov_offset"), let stride = pfDir.readInt("sriov_stride"), stride > 0 {
            let distance = rid(vf) - rid(pf) - offset
            if distance >= 0 && distance % stride == 0, let target = pfDir.readLinkBytes("virtfn\(distance / stride)"),
               PCIAddress.fromSysfsName(bytes: lastComponent(target)) == vf {
                return distance / stride
            }
        }
        return virtualFunctionLinks(pfDir).first { $0.address == vf }?.index
    }

    /// Sets each VF's `vfIndex` from its PF's links.
    static func linkVirtualFunctions(_ devices: inout [PCIDevice]) {
        var index: [PCIAddress: Int] = [:]
        for d in devices { for vf in d.sriov?.vfs ?? [] { index[vf.address] = vf.index } }
        guard !index.isEmpty else { return }
        for i in devices.indices where devices[i].physfn != nil {
            devices[i].vfIndex = index[devices[i].address]
        }
    }
}

extension PCIInventory {
    /// The PCI members of one IOMMU group (from `kernel/iommu_groups/N/devices`), or nil if there is no such group.
    public func groupMembers(_ group: Int) -> [PCIAddress]? {
        guard let dir = SysfsDirectory(root.iommuGroupPath(group) + "/devices") else { return nil }
        return dir.entries().compactMap(PCIAddress.fromSysfsName).sorted()
    }
}
