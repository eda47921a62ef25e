import Foundation
import HostPCI
import NIOCore
import PassageAPI

/// The device inventory the API serves: scanned from sysfs, patched after every change Passage
/// makes and rescanned in the background (hot-plug without udev is caught within the rescan interval).
/// The list's JSON is encoded once per snapshot, on the first request that wants it, each device's
/// object where it lies in it known: the whole list is that buffer as it is, a page or a filtered
/// list is the chosen objects copied out of it, so listing thousands of devices costs a memory copy
/// and no request re-encodes devices.
public final class InventoryCache: @unchecked Sendable {
    public let root: SysfsRoot
    private let lock = NSLock()
    private var snapshot: Snapshot?
    /// Bumped with every new snapshot; the encoded list belongs to one generation.
    private var generation = 0
    private var encoded: EncodedList?
    /// Tells this process's generations from an earlier run's in entity tags.
    private let nonce = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    private let events: EventHub

    public struct Snapshot: Sendable {
        public var devices: [PCIDevice]
        public var wire: [DeviceInfo]
        public var groups: [IOMMUGroup]
        public var scannedAt: Date
        /// Position of each function in `devices`/`wire`, of each group in `groups`.
        public var index: [PCIAddress: Int]
        public var groupIndex: [Int: Int]
        /// The cache's generation when this snapshot was made current.
        public var generation = 0

        public init(devices: [PCIDevice], groups: [IOMMUGroup]) {
            self.devices = devices
            wire = devices.map(DeviceInfo.init)
            self.groups = groups
            scannedAt = Date()
            index = Dictionary(devices.enumerated().map { ($1.address, $0) }, uniquingKeysWith: { a, _ in a })
            groupIndex = Dictionary(groups.enumerated().map { ($1.number, $0) }, uniquingKeysWith: { a, _ in a })
        }

        public func device(_ a: PCIAddress) -> PCIDevice? { index[a].map { devices[$0] } }
        public func info(_ a: PCIAddress) -> DeviceInfo? { index[a].map { wire[$0] } }
        public func group(_ number: Int) -> IOMMUGroup? { groupIndex[number].map { groups[$0] } }
    }

    public init(root: SysfsRoot, events: EventHub) {
        self.root = root
        self.events = events
    }

    /// The current snapshot, scanning first if there is none.
    public func current() throws -> Snapshot {
        if let s = lock.withLock({ snapshot }) { return s }
        return try refresh()
    }

    /// A snapshot's device list as JSON: `[obj,obj,…]\n`, and where each device's object lies in it.
    public struct EncodedList: Sendable {
        public let snapshot: Snapshot
        /// The whole list, ready to send.
        public let buffer: ByteBuffer
        /// `ranges[i]`: the bytes of `snapshot.wire[i]`'s object in `buffer`.
        public let ranges: [Range<Int>]

        /// A JSON array of the objects of these devices (indexes into `snapshot.wire`), copied out
        /// of the encoded list: the bytes `StreamingJSONEncoder` would give for them.
        public func array(of indexes: [Int]) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(indexes.reduce(3) { $0 + ranges[$1].count + 1 })
            out.append(UInt8(ascii: "["))
            buffer.withUnsafeReadableBytes { raw in
                for (n, i) in indexes.enumerated() {
                    if n > 0 { out.append(UInt8(ascii: ",")) }
                    out.append(contentsOf: raw[ranges[i]])
                }
            }
            out.append(contentsOf: [UInt8(ascii: "]"), UInt8(ascii: "\n")])
            return out
        }
    }

    /// The current snapshot's list, encoded once per snapshot (each device on its own, then
    /// joined) and kept until the next.
    public func encodedList() throws -> EncodedList {
        let (current, cached) = lock.withLock { () -> (Snapshot?, EncodedList?) in
            (snapshot, snapshot.flatMap { s in encoded?.snapshot.generation == s.generation ? encoded : nil })
        }
        if let cached, current != nil { return cached }
        let s = try current ?? refresh()
        let encoder = StreamingJSONEncoder(pretty: false)
        var json: [UInt8] = [UInt8(ascii: "[")]
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(s.wire.count)
        for (i, d) in s.wire.enumerated() {
            if i > 0 { json.append(UInt8(ascii: ",")) }
            let object = try encoder.encode(d)
            ranges.append(json.count..<json.count + object.count)
            json.append(contentsOf: object)
        }
        json.append(contentsOf: [UInt8(ascii: "]"), UInt8(ascii: "\n")])
        let list = EncodedList(snapshot: s, buffer: ByteBuffer(bytes: json), ranges: ranges)
        lock.withLock { if snapshot?.generation == s.generation { encoded = list } }
        return list
    }

    /// `GET /v1/devices` without filters, ready to send: the same buffer for every request of a
    /// snapshot (no copy), with its generation.
    public func listJSON() throws -> (buffer: ByteBuffer, generation: Int) {
        let list = try encodedList()
        return (list.buffer, list.snapshot.generation)
    }

    /// An HTTP entity tag for a snapshot: changes whenever the inventory does (and across restarts).
    public func entityTag(_ generation: Int) -> String { "\"\(nonce)-\(generation)\"" }

    /// Re-reads just these functions (after Passage changed them) and patches the snapshot.
    /// A function that appeared or vanished means a full rescan.
    @discardableResult
    public func refresh(_ addresses: [PCIAddress]) throws -> Snapshot {
        guard let base = lock.withLock({ snapshot }) else { return try refresh() }
        // Names come from the cached device when the ids are the same (loading pci.ids again
        // would cost more than everything else in a claim).
        let inventory = PCIInventory(root: root, lookUpNames: false)
        var fresh: [PCIDevice] = []
        for a in Set(addresses) {
            guard let old = base.device(a), var d = try? inventory.device(a) else { return try refresh() }
            if old.vendorID == d.vendorID && old.deviceID == d.deviceID && old.classCode == d.classCode
                && old.subsystemVendorID == d.subsystemVendorID && old.subsystemDeviceID == d.subsystemDeviceID {
                d.names = old.names
            } else if let named = try? PCIInventory(root: root).device(a) {
                d = named
            }
            fresh.append(d)
        }
        // Patched in place: the snapshot leaves the cache while the lock is held, so its arrays
        // are uniquely referenced and 4,096 entries are not copied for a change of one (unless a
        // reader still holds this snapshot, which then keeps its own).
        var changes: [(old: DeviceInfo, new: DeviceInfo)] = []
        let patched: Snapshot? = lock.withLock {
            guard var next = snapshot else { return nil }
            snapshot = nil
            for d in fresh {
                guard let i = next.index[d.address] else { continue }
                let info = DeviceInfo(d)
                changes.append((next.wire[i], info))
                next.devices[i] = d
                next.wire[i] = info
                if let g = d.iommuGroup, let gi = next.groupIndex[g],
                   let m = next.groups[gi].devices.firstIndex(where: { $0.address == d.address }) {
                    next.groups[gi].devices[m] = d
                }
            }
            next.scannedAt = Date()
            generation += 1
            next.generation = generation
            snapshot = next
            return next
        }
        guard let patched else { return try refresh() }
        for (old, new) in changes { publishChange(from: old, to: new) }
        return patched
    }

    /// Rescans now; publishes device-appeared/vanished/changed events against the previous scan.
    @discardableResult
    public func refresh() throws -> Snapshot {
        let inventory = PCIInventory(root: root)
        let devices = try inventory.devices()
        var next = Snapshot(devices: devices, groups: inventory.groups(devices: devices))
        let previous = lock.withLock { () -> Snapshot? in
            let p = snapshot
            generation += 1
            next.generation = generation
            snapshot = next
            return p
        }
        if let previous { publishChanges(from: previous.wire, to: next.wire) }
        return next
    }

    private func publishChanges(from old: [DeviceInfo], to new: [DeviceInfo]) {
        let before = Dictionary(old.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        let after = Dictionary(new.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        for d in new where before[d.address] == nil {
            events.publish("device-appeared", address: d.address, message: "\(d.address) appeared (\(d.vendorId):\(d.deviceId), driver \(d.driver ?? "none"))")
        }
        for d in old where after[d.address] == nil {
            events.publish("device-vanished", address: d.address, message: "\(d.address) is gone")
        }
        for d in new {
            if let b = before[d.address] { publishChange(from: b, to: d) }
        }
    }

    private func publishChange(from b: DeviceInfo, to d: DeviceInfo) {
        guard b.driver != d.driver || b.driverOverride != d.driverOverride || b.sriov?.numVFs != d.sriov?.numVFs else { return }
        events.publish("device-changed", address: d.address,
                       message: "\(d.address): driver \(b.driver ?? "none") → \(d.driver ?? "none")" + (b.sriov?.numVFs != d.sriov?.numVFs ? ", VFs \(b.sriov?.numVFs ?? 0) → \(d.sriov?.numVFs ?? 0)" : ""))
    }
}

extension DeviceInfo {
    /// The one mapping from HostPCI's model to the wire type (the CLI's local mode uses it too).
    public init(_ d: PCIDevice) {
        self.init(
            address: d.address.description,
            vendorId: hex(d.vendorID, 4),
            deviceId: hex(d.deviceID, 4),
            subsystemVendorId: d.subsystemVendorID.map { hex($0, 4) },
            subsystemDeviceId: d.subsystemDeviceID.map { hex($0, 4) },
            classCode: hex(d.classCode, 6),
            revision: d.revision.map { hex($0, 2) },
            vendorName: d.names.vendor,
            deviceName: d.names.device,
            subsystemName: d.names.subsystem,
            className: d.names.deviceClass,
            driver: d.driver,
            driverOverride: d.driverOverride,
            iommuGroup: d.iommuGroup,
            numaNode: d.numaNode,
            physfn: d.physfn?.description,
            vfIndex: d.vfIndex,
            sriov: d.sriov.map(SRIOVInfo.init),
            isBridge: d.isBridge,
            upstream: d.upstream.map(\.description),
            bars: d.bars.map(BARInfo.init),
            romSize: d.romSize,
            capabilities: d.capabilities.map(CapabilitiesInfo.init),
            resetMethods: d.resetMethods)
    }
}

extension SRIOVInfo {
    public init(_ s: SRIOVPhysicalFunction) {
        self.init(totalVFs: s.totalVFs, numVFs: s.numVFs, driversAutoprobe: s.driversAutoprobe,
                  vfOffset: s.vfOffset, vfStride: s.vfStride, vfDeviceId: s.vfDeviceID.map { hex($0, 4) },
                  vfs: s.vfs.map(\.address.description), vfBars: s.vfBars.map(BARInfo.init))
    }
}

extension BARInfo {
    public init(_ b: BAR) {
        self.init(index: b.index, type: b.kind.rawValue, start: "0x" + hex(b.start, 1), size: b.size, prefetchable: b.prefetchable)
    }
}

extension CapabilitiesInfo {
    public init(_ c: PCICapabilities) {
        self.init(
            msi: c.msi.map { .init(vectors: $0.vectors, is64Bit: $0.is64Bit, perVectorMasking: $0.perVectorMasking, enabled: $0.enabled) },
            msix: c.msix.map { .init(tableSize: $0.tableSize, tableBar: $0.tableBAR, tableOffset: $0.tableOffset,
                                     pbaBar: $0.pbaBAR, pbaOffset: $0.pbaOffset, enabled: $0.enabled) },
            pcie: c.pciExpress.map { .init(portType: $0.portType.rawValue, flr: $0.flr) },
            sriov: c.sriov.map { .init(initialVFs: $0.initialVFs, totalVFs: $0.totalVFs, numVFs: $0.numVFs,
                                       firstVFOffset: $0.firstVFOffset, vfStride: $0.vfStride, vfDeviceId: hex($0.vfDeviceID, 4)) },
            acs: c.acs.map { .init(capability: hex($0.capability, 4), control: hex($0.control, 4), enabled: $0.enabledNames) },
            ari: c.ari,
            list: c.all)
    }
}

extension IOMMUGroupInfo {
    public init(_ g: IOMMUGroup) {
        func member(_ d: PCIDevice) -> Member { Member(address: d.address.description, driver: d.driver, isBridge: d.isBridge) }
        let blockers = Set(g.blockers.map(\.address))
        self.init(group: g.number, devices: g.devices.map(member), otherMembers: g.otherMembers,
                  viable: blockers.isEmpty, blockers: g.devices.filter { blockers.contains($0.address) }.map(member))
    }
}
