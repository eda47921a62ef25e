import CPCI

#if canImport(Glibc)
import Glibc
#endif

/// Owns one libpci access handle pointed at a sysfs root, for name lookups (pci.ids) and
/// capability walking. Not thread-safe: one per scan.
final class PCILibrary {
    private let access: UnsafeMutablePointer<pci_access>
    private var buffer = [CChar](repeating: 0, count: 512)
    private var vendorNames: [UInt16: String?] = [:]
    private var deviceNames: [UInt32: String?] = [:]
    private var classNames: [UInt16: String?] = [:]
    private var subsystemNames: [UInt64: String?] = [:]

    /// The caller has checked that `root.pciDevicesPath` exists and is readable: libpci's
    /// `pci_init` ends the process when no access method works.
    init(root: SysfsRoot) {
        access = pci_alloc()
        passage_pci_quiet(access)
        access.pointee.method = UInt32(PCI_ACCESS_SYS_BUS_PCI.rawValue)
        let key = strdup("sysfs.path")
        let value = strdup(root.pciBusPath)
        _ = pci_set_param(access, key, value)  // libpci copies both strings
        free(key)
        free(value)
        pci_init(access)
    }

    deinit { pci_cleanup(access) }

    func names(of d: PCIDevice) -> PCINames {
        names(vendor: d.vendorID, device: d.deviceID, subsystemVendor: d.subsystemVendorID,
              subsystemDevice: d.subsystemDeviceID, classCode: d.classCode)
    }

    func names(vendor: UInt16, device: UInt16, subsystemVendor: UInt16?, subsystemDevice: UInt16?,
               classCode: UInt32) -> PCINames {
        var n = PCINames()
        n.vendor = lookup(&vendorNames, vendor) { a, b, s in passage_pci_vendor_name(a, b, s, UInt32(vendor)) }
        let deviceKey = UInt32(vendor) << 16 | UInt32(device)
        n.device = lookup(&deviceNames, deviceKey) { a, b, s in
            passage_pci_device_name(a, b, s, UInt32(vendor), UInt32(device))
        }
        let cls = UInt16(truncatingIfNeeded: classCode >> 8)
        n.deviceClass = lookup(&classNames, cls) { a, b, s in passage_pci_class_name(a, b, s, UInt32(cls)) }
        if let sv = subsystemVendor, let sd = subsystemDevice, sv != 0 || sd != 0 {
            let key = UInt64(deviceKey) << 32 | UInt64(sv) << 16 | UInt64(sd)
            n.subsystem = lookup(&subsystemNames, key) { a, b, s in
                passage_pci_subsystem_name(a, b, s, UInt32(vendor), UInt32(device), UInt32(sv), UInt32(sd))
            }
        }
        return n
    }

    private func lookup<K: Hashable>(
        _ cache: inout [K: String?], _ key: K,
        _ call: (UnsafeMutablePointer<pci_access>, UnsafeMutablePointer<CChar>, Int32) -> UnsafePointer<CChar>?
    ) -> String? {
        if let hit = cache[key] { return hit }
        let access = self.access
        let result = buffer.withUnsafeMutableBufferPointer { b -> String? in
            guard let p = call(access, b.baseAddress!, Int32(b.count)) else { return nil }
            return String(cString: p)
        }
        cache[key] = result
        return result
    }

    /// Walks the capability lists of `address` with libpci, starting from the first bytes of its
    /// configuration space that the caller already read (at least 256, or nil is returned: the kernel
    /// shows only 64 bytes to non-root readers). Extended capabilities beyond those bytes are read
    /// by libpci from the same sysfs `config` file.
    func capabilities(of address: PCIAddress, config: [UInt8]) -> PCICapabilities? {
        guard config.count >= 256 else { return nil }
        guard let d = pci_get_dev(access, Int32(address.domain), Int32(address.bus),
                                  Int32(address.device), Int32(address.function)) else { return nil }
        defer { pci_free_dev(d) }
        var cache = config
        return cache.withUnsafeMutableBufferPointer { buf -> PCICapabilities in
            pci_setup_cache(d, buf.baseAddress, Int32(buf.count))
            _ = pci_fill_info(d, PCI_FILL_CAPS | PCI_FILL_EXT_CAPS)
            var caps = PCICapabilities(ari: false, all: [])
            var cap = d.pointee.first_cap
            while let c = cap {
                let id = c.pointee.id
                let pos = Int32(c.pointee.addr)
                if c.pointee.type == UInt16(PCI_CAP_NORMAL) {
                    caps.all.append(PCICapabilities.name(ofStandard: id))
                    switch Int32(id) {
                    case PCI_CAP_ID_MSI:
                        let control = pci_read_word(d, pos + 2)
                        caps.msi = .init(vectors: 1 << Int((control >> 1) & 7), is64Bit: control & 0x80 != 0,
                                         perVectorMasking: control & 0x100 != 0, enabled: control & 1 != 0)
                    case PCI_CAP_ID_MSIX:
                        let control = pci_read_word(d, pos + 2)
                        let table = pci_read_long(d, pos + 4)
                        let pba = pci_read_long(d, pos + 8)
                        caps.msix = .init(tableSize: Int(control & 0x7ff) + 1, tableBAR: Int(table & 7),
                                          tableOffset: table & ~7, pbaBAR: Int(pba & 7), pbaOffset: pba & ~7,
                                          enabled: control & 0x8000 != 0)
                    case PCI_CAP_ID_EXP:
                        let flags = pci_read_word(d, pos + 2)
                        let devcap = pci_read_long(d, pos + 4)
                        caps.pciExpress = .init(portType: Self.portType(Int((flags >> 4) & 0xf)),
                                                flr: devcap & (1 << 28) != 0)
                    default: break
                    }
                } else {
                    caps.all.append(PCICapabilities.name(ofExtended: id))
                    switch Int32(id) {
                    case PCI_EXT_CAP_ID_SRIOV:
                        caps.sriov = .init(initialVFs: Int(pci_read_word(d, pos + 0x0c)),
                                           totalVFs: Int(pci_read_word(d, pos + 0x0e)),
                                           numVFs: Int(pci_read_word(d, pos + 0x10)),
                                           firstVFOffset: Int(pci_read_word(d, pos + 0x14)),
                                           vfStride: Int(pci_read_word(d, pos + 0x16)),
                                           vfDeviceID: pci_read_word(d, pos + 0x1a))
                    case PCI_EXT_CAP_ID_ACS:
                        caps.acs = .init(capability: pci_read_word(d, pos + 4), control: pci_read_word(d, pos + 6))
                    case PCI_EXT_CAP_ID_ARI:
                        caps.ari = true
                    default: break
                    }
                }
                cap = c.pointee.next
            }
            return caps
        }
    }

    private static func portType(_ t: Int) -> PCICapabilities.PCIExpress.PortType {
        switch t {
        case 0: .endpoint
        case 1: .legacyEndpoint
        case 4: .rootPort
        case 5: .upstreamPort
        case 6: .downstreamPort
        case 7: .pcieToPCIBridge
        case 8: .pciToPCIeBridge
        case 9: .rootComplexIntegratedEndpoint
        case 10: .rootComplexEventCollector
        default: .unknown
        }
    }
}
