import HostPCI
import PassageAPI

/// `passage devices --tree`: IOMMU groups, and in them each device with a PF's VFs beneath it.
enum Topology {
    static func build(devices: [PCIDevice], all: [PCIDevice], groups: [IOMMUGroup]) -> [TopologyGroup] {
        let shown = Set(devices.map(\.address))
        let byAddress = Dictionary(all.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        func node(_ d: PCIDevice, withVFs: Bool) -> TopologyGroup.Node {
            let vfs: [TopologyGroup.Node]? = withVFs ? d.sriov.map { s in
                s.vfs.compactMap { byAddress[$0.address] }.map { node($0, withVFs: false) }
            } : nil
            return .init(address: d.address.description, vendorId: hex(d.vendorID, 4), deviceId: hex(d.deviceID, 4),
                         name: d.names.device, driver: d.driver, iommuGroup: d.iommuGroup, vfIndex: d.vfIndex,
                         upstream: d.upstream.map(\.description), vfs: vfs)
        }
        // A VF is drawn under its PF when the PF is shown; otherwise in its own group.
        func drawnUnderPF(_ d: PCIDevice) -> Bool { d.physfn.map { shown.contains($0) } ?? false }

        var result: [TopologyGroup] = []
        var placed = Set<PCIAddress>()
        for g in groups {
            let members = g.devices.filter { shown.contains($0.address) && !drawnUnderPF($0) }
            guard !members.isEmpty else { continue }
            members.forEach { placed.insert($0.address) }
            result.append(TopologyGroup(group: g.number, viable: g.isViable, devices: members.map { node($0, withVFs: true) }))
        }
        let ungrouped = devices.filter { !placed.contains($0.address) && !drawnUnderPF($0) }
        if !ungrouped.isEmpty {
            result.append(TopologyGroup(group: nil, viable: nil, devices: ungrouped.map { node($0, withVFs: true) }))
        }
        return result
    }

    static func render(_ groups: [TopologyGroup]) -> String {
        var out = ""
        for g in groups {
            if let n = g.group {
                out += "IOMMU group \(n)" + (g.viable == true ? "  (viable for vfio)" : "") + "\n"
            } else {
                out += "no IOMMU group\n"
            }
            for (i, d) in g.devices.enumerated() {
                let last = i == g.devices.count - 1
                out += (last ? "└─ " : "├─ ") + line(d) + "\n"
                let vfs = d.vfs ?? []
                for (j, vf) in vfs.enumerated() {
                    out += (last ? "   " : "│  ") + (j == vfs.count - 1 ? "└─ " : "├─ ")
                        + "vf\(vf.vfIndex.map(String.init) ?? "?") " + line(vf)
                        + (vf.iommuGroup.map { "  group \($0)" } ?? "") + "\n"
                }
            }
        }
        return out
    }

    private static func line(_ n: TopologyGroup.Node) -> String {
        var s = "\(n.address)  \(n.vendorId):\(n.deviceId)"
        if let name = n.name { s += "  \(name)" }
        s += "  [\(n.driver ?? "no driver")]"
        if let vfs = n.vfs { s += "  PF with \(vfs.count) VF\(vfs.count == 1 ? "" : "s")" }
        if let parent = n.upstream.last { s += "  via \(parent)" }
        return s
    }
}
