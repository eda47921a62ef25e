import KVM
import VFIO
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The devices one VM passes through: a VFIO container (type1v2) of its own, the IOMMU groups of
/// the devices attached to it, all guest RAM mapped for their DMA (IOVA = guest-physical), each
/// device reset and put on the host bridge with its BARs placed in the PCI hole.
final class PassthroughSet {
    let container: VFIOContainer
    private(set) var groups: [Int: VFIOGroup] = [:]
    private(set) var devices: [PassthroughDevice] = []
    /// The KVM–VFIO pseudo device that tells KVM the VM's groups (-1 if KVM has none).
    private(set) var kvmVFIODevice: Int32 = -1
    /// How long set-up took, and the part of it that pinned and mapped guest RAM (nanoseconds).
    private(set) var setupNanoseconds: Int64 = 0
    private(set) var dmaMapNanoseconds: Int64 = 0

    /// Where BARs go: the PCI hole up to the IOAPIC, and ports 0xC000… (both inside the windows
    /// the DSDT's PCI0 gives the guest).
    static let memoryWindow: Range<UInt64> = GuestMemory.pciHoleStart..<BootLayout.ioapic
    static let portWindow: Range<UInt64> = 0xC000..<0x1_0000

    init(addresses: [String], sysfs: String = "/sys", vm: KVMVirtualMachine, memory: GuestMemory, bridge: PCIHostBridge,
         io: IOBus, mmio: MMIOBus, routes: InterruptRoutes, slots: MemorySlots, report: @escaping (String) -> Void) throws(VMMError) {
        let t0 = MachineTimeline.now()
        var groupOf: [String: Int] = [:]
        for a in addresses { groupOf[a] = try Self.iommuGroup(of: a, sysfs: sysfs) }
        do { container = try VFIOContainer() } catch { throw VMMError(error) }
        do {
            for a in addresses where groups[groupOf[a]!] == nil {
                let g = try VFIOGroup(number: groupOf[a]!)
                try g.attach(to: container)
                groups[g.number] = g
            }
            // Guest RAM for DMA: pinned and mapped once, before any device can be told an address.
            let t1 = MachineTimeline.now()
            for r in memory.regions {
                try container.mapDMA(iova: r.guestAddress, vaddr: memory.mapping.pointer + r.hostOffset, size: r.size)
            }
            dmaMapNanoseconds = MachineTimeline.now() - t1
        } catch { throw VMMError(error) }
        do { kvmVFIODevice = try vm.addVFIOGroups(groups.keys.sorted().map { groups[$0]!.fd }) } catch {
            report("KVM has no VFIO device (\(error.message)); the devices work, but KVM cannot account for non-coherent DMA")
        }
        var nextMemory = Self.memoryWindow.lowerBound, nextPort = Self.portWindow.lowerBound
        var resetAlready = Set<String>()   // functions a bus reset already covered
        for a in addresses {
            let vfio: VFIODevice
            do { vfio = try groups[groupOf[a]!]!.device(a) } catch { throw VMMError(error) }
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

    /// Resets a function before the VM starts: its own reset (FLR, PM, or a bus reset VFIO may do
    /// alone) when VFIO has one; else a hot reset of its bus when every function on that bus is in
    /// a group this VM holds (QEMU's rule too: a reset must not touch a device someone else owns);
    /// else none, with a warning naming what blocks it. Returns the functions reset.
    static func reset(_ vfio: VFIODevice, groups: [Int: VFIOGroup], report: (String) -> Void,
                      inform: (String) -> Void = Machine.note) -> Set<String> {
        let a = vfio.address
        if vfio.info.canReset {
            do { try vfio.reset() } catch { report("\(a): reset before the VM starts failed: \(error.message)") }
            return [a]
        }
        let dependents: [VFIODevice.ResetDependent]
        do { dependents = try vfio.hotResetDependents() } catch {
            report("\(a) has neither a function reset nor a bus reset VFIO can do (\(error.message)); it starts in the state its last user left")
            return []
        }
        let foreign = dependents.filter { groups[$0.group] == nil }
        guard foreign.isEmpty else {
            let names = foreign.map { "\($0.address) (IOMMU group \($0.group))" }.joined(separator: ", ")
            report("\(a) has no function reset, and a bus reset would also reset \(names), which this VM does not hold; it starts without a reset (pass those through too to have it reset)")
            return []
        }
        let fds = Set(dependents.map(\.group)).sorted().map { groups[$0]!.fd }
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
