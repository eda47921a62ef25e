import KVM
import VFIO
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How passed-through devices are opened and where guest RAM is mapped for their DMA.
public enum VFIOBackend: String, Sendable, Equatable {
    /// iommufd when the kernel has it for every device (`IOMMUFD.canServe`), else type1.
    case auto
    /// `/dev/iommu` with one IOAS, each device through its cdev `/dev/vfio/devices/vfioN` (Linux 6.6+).
    case iommufd
    /// The `/dev/vfio/vfio` container (type1v2) and the groups' `/dev/vfio/N`.
    case type1
}

/// The devices one VM passes through, each reset and put on the host bridge with its BARs placed
/// in the PCI hole, and all guest RAM mapped for their DMA (IOVA = guest-physical) in one
/// address space: an iommufd IOAS the devices' cdevs are attached to, or a type1v2 container
/// of their own the IOMMU groups are attached to.
final class PassthroughSet {
    /// The backend in use (never `.auto`).
    let backend: VFIOBackend
    private var container: VFIOContainer?
    private var iommufd: IOMMUFD?
    private(set) var groups: [Int: VFIOGroup] = [:]
    private(set) var devices: [PassthroughDevice] = []
    /// The KVM–VFIO pseudo device that tells KVM the VM's groups or device files (-1 if KVM has none).
    private(set) var kvmVFIODevice: Int32 = -1
    /// How long set-up took, and the part of it that pinned and mapped guest RAM (nanoseconds).
    private(set) var setupNanoseconds: Int64 = 0
    private(set) var dmaMapNanoseconds: Int64 = 0

    /// Where BARs go: the PCI hole up to the IOAPIC, and ports 0xC000… (both inside the windows
    /// the DSDT's PCI0 gives the guest).
    static let memoryWindow: Range<UInt64> = GuestMemory.pciHoleStart..<BootLayout.ioapic
    static let portWindow: Range<UInt64> = 0xC000..<0x1_0000

    init(addresses: [String], backend requested: VFIOBackend = .auto, sysfs: String = "/sys", dev: String = "/dev",
         vm: KVMVirtualMachine, memory: GuestMemory, bridge: PCIHostBridge,
         io: IOBus, mmio: MMIOBus, routes: InterruptRoutes, slots: MemorySlots, report: @escaping (String) -> Void) throws(VMMError) {
        let t0 = MachineTimeline.now()
        var groupOf: [String: Int] = [:]
        for a in addresses { groupOf[a] = try Self.iommuGroup(of: a, sysfs: sysfs) }
        backend = Self.choose(requested, for: addresses, sysfs: sysfs, dev: dev)
        var opened: [String: VFIODevice] = [:]
        do {
            switch backend {
            case .iommufd:
                let fd = try IOMMUFD(path: "\(dev)/iommu")
                iommufd = fd
                // KVM learns each device file before its bind (the kernel's order for the cdev).
                kvmVFIODevice = Self.kvmDevice(vm, report: report)
                for a in addresses {
                    let file = try VFIODeviceFile(address: a, sysfs: sysfs, dev: dev)
                    if kvmVFIODevice >= 0 {
                        do { try vm.addVFIOFile(file.descriptor, to: kvmVFIODevice) } catch {
                            report("KVM refused \(a)'s VFIO device file (\(error.message)); the device works, but KVM cannot account for non-coherent DMA")
                        }
                    }
                    opened[a] = try file.bind(to: fd)
                }
                // Guest RAM for DMA, once the devices are attached to the IOAS (mapping into an IOAS
                // with nothing attached only records it; pages are pinned when a domain needs them),
                // before any device can be told an address.
                dmaMapNanoseconds = try Self.mapGuestRAM(memory) { (iova, vaddr, size) throws(VFIOError) in
                    try fd.mapDMA(iova: iova, vaddr: vaddr, size: size)
                }
            case .type1, .auto:
                let c = try VFIOContainer(path: "\(dev)/vfio/vfio")
                container = c
                for a in addresses where groups[groupOf[a]!] == nil {
                    let g = try VFIOGroup(number: groupOf[a]!, directory: "\(dev)/vfio")
                    try g.attach(to: c)
                    groups[g.number] = g
                }
                dmaMapNanoseconds = try Self.mapGuestRAM(memory) { (iova, vaddr, size) throws(VFIOError) in
                    try c.mapDMA(iova: iova, vaddr: vaddr, size: size)
                }
                kvmVFIODevice = Self.kvmDevice(vm, report: report)
                if kvmVFIODevice >= 0 {
                    for n in groups.keys.sorted() {
                        do { try vm.addVFIOFile(groups[n]!.fd, to: kvmVFIODevice) } catch {
                            report("KVM refused IOMMU group \(n) (\(error.message)); the devices work, but KVM cannot account for non-coherent DMA")
                        }
                    }
                }
                for a in addresses { opened[a] = try groups[groupOf[a]!]!.device(a) }
            }
        } catch { throw VMMError(error) }
        switch backend {
        case .iommufd: Machine.note("passthrough through iommufd (/dev/iommu, IOAS \(iommufd!.ioas)): \(addresses.joined(separator: ", "))")
        default: Machine.note("passthrough through the type1 container (IOMMU groups \(groups.keys.sorted().map(String.init).joined(separator: ", "))): \(addresses.joined(separator: ", "))")
        }
        var nextMemory = Self.memoryWindow.lowerBound, nextPort = Self.portWindow.lowerBound
        var resetAlready = Set<String>()   // functions a bus reset already covered
        for a in addresses {
            let vfio = opened[a]!
            if !resetAlready.contains(a) { resetAlready.formUnion(Self.reset(vfio, groups: groups, report: report)) }
            guard let slot = bridge.freeSlot else { throw VMMError(.passthrough, "no free slot on the PCI bus for \(a)") }
            let d = try PassthroughDevice(device: vfio, vm: vm, routes: routes, memorySlots: slots, mmio: mmio, io: io,
                                          intxGSI: PCIHostBridge.intxGSI(slot: slot), report: report)
            try d.assignBARs(memory: &nextMemory, memoryEnd: Self.memoryWindow.upperBound, ports: &nextPort, portsEnd: Self.portWindow.upperBound)
            bridge.attach(d, slot: slot)
            io.withLock {
                d.updateMappings()
                d.start()
            }
            devices.append(d)
        }
        setupNanoseconds = MachineTimeline.now() - t0
    }

    /// The backend for `requested`: `.auto` is iommufd when it can serve every device, else type1.
    static func choose(_ requested: VFIOBackend, for addresses: [String], sysfs: String, dev: String) -> VFIOBackend {
        guard requested == .auto else { return requested }
        return IOMMUFD.canServe(addresses, sysfs: sysfs, dev: dev) ? .iommufd : .type1
    }

    /// Maps every guest RAM region at its guest-physical address; returns the time it took.
    private static func mapGuestRAM(_ memory: GuestMemory,
                                    _ map: (UInt64, UnsafeMutableRawPointer, UInt64) throws(VFIOError) -> Void) throws(VFIOError) -> Int64 {
        let t1 = MachineTimeline.now()
        for r in memory.regions { try map(r.guestAddress, memory.mapping.pointer + r.hostOffset, r.size) }
        return MachineTimeline.now() - t1
    }

    /// The KVM–VFIO pseudo device, or -1 (with a warning) when KVM has none.
    private static func kvmDevice(_ vm: KVMVirtualMachine, report: (String) -> Void) -> Int32 {
        do { return try vm.createVFIODevice() } catch {
            report("KVM has no VFIO device (\(error.message)); the devices work, but KVM cannot account for non-coherent DMA")
            return -1
        }
    }

    /// Resets a function before the VM starts: its own reset (FLR, PM, or a bus reset VFIO may do
    /// alone) when VFIO has one; else a hot reset of its bus when every function on that bus is
    /// this VM's: in a group it holds (type1), or bound to its iommufd (the cdev; QEMU's rule too:
    /// a reset must not touch a device someone else owns); else none, with a warning naming what
    /// blocks it. Returns the functions reset.
    static func reset(_ vfio: VFIODevice, groups: [Int: VFIOGroup], report: (String) -> Void,
                      inform: (String) -> Void = Machine.note) -> Set<String> {
        let a = vfio.address
        if vfio.info.canReset {
            do { try vfio.reset() } catch { report("\(a): reset before the VM starts failed: \(error.message)") }
            return [a]
        }
        let info: VFIODevice.HotResetInfo
        do { info = try vfio.hotResetInfo() } catch {
            report("\(a) has neither a function reset nor a bus reset VFIO can do (\(error.message)); it starts in the state its last user left")
            return []
        }
        let dependents = info.dependents
        let foreign = info.byDeviceID
            ? dependents.filter { $0.id == VFIODevice.ResetDependent.notOwned || (!info.allOwned && $0.id == 0) }
            : dependents.filter { groups[Int($0.id)] == nil }
        guard foreign.isEmpty, !info.byDeviceID || info.allOwned else {
            let names = foreign.map { info.byDeviceID ? $0.address : "\($0.address) (IOMMU group \($0.id))" }.joined(separator: ", ")
            report("\(a) has no function reset, and a bus reset would also reset \(names.isEmpty ? "devices" : names), which this VM does not hold; it starts without a reset (pass those through too to have it reset)")
            return []
        }
        let fds = info.byDeviceID ? [] : Set(dependents.map { Int($0.id) }).sorted().map { groups[$0]!.fd }
        do { try vfio.hotReset(groupFDs: fds) } catch {
            report("\(a): bus reset before the VM starts failed: \(error.message)")
            return []
        }
        inform("\(a) has no function reset: reset its bus instead (\(dependents.map(\.address).joined(separator: ", ")))")
        return Set(dependents.map(\.address)).union([a])
    }

    /// The IOMMU group of `address`, with errors that say what to do.
    static func iommuGroup(of address: String, sysfs: String) throws(VMMError) -> Int {
        let dir = "\(sysfs)/bus/pci/devices/\(address)"
        guard access(dir, F_OK) == 0 else {
            throw VMMError(.passthrough, "there is no PCI function \(address) on this host (no \(dir)); list them with passage devices")
        }
        guard let group = readLinkBase("\(dir)/iommu_group"), let n = Int(group) else {
            throw VMMError(.passthrough, "\(address) has no IOMMU group: the host's IOMMU is off (boot with intel_iommu=on or amd_iommu=on), so it cannot be passed through safely")
        }
        let driver = readLinkBase("\(dir)/driver")
        guard driver == "vfio-pci" else {
            throw VMMError(.passthrough, "\(address) is \(driver.map { "bound to \($0)" } ?? "not bound to any driver"), not vfio-pci: claim it first (passage claim --device \(address)) or bind its group (passage bind --group \(address))")
        }
        return n
    }

    deinit { if kvmVFIODevice >= 0 { close(kvmVFIODevice) } }

    static func readLinkBase(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.split(separator: "/").last.map(String.init)
    }
}
