import ArgumentParser
import HostPCI
import PassageAPI
import PassageDaemon

struct Groups: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groups",
        abstract: "List IOMMU groups, their members, and whether each can be handed to VFIO.",
        discussion: """
            A group is viable when every member is unbound, on vfio-pci, on pci-stub, or a bridge on pcieport. \
            The members standing in the way are listed with their drivers.
            """
    )

    @OptionGroup var output: OutputOptions
    @OptionGroup var sysfs: SysfsOptions

    func run() throws {
        try reportingErrors(json: output.json) {
            let inventory = PCIInventory(root: sysfs.root)
            let groups = inventory.groups(devices: try inventory.devices())
            if output.json {
                try printJSON(groups.map(IOMMUGroupInfo.init))
                return
            }
            if groups.isEmpty {
                writeStdout("no IOMMU groups under \(sysfs.root.iommuGroupsPath): the IOMMU is off or absent "
                    + "(enable VT-d/AMD-Vi in firmware and boot with intel_iommu=on or amd_iommu=on)\n")
                return
            }
            var t = Table(headers: ["GROUP", "VIABLE", "MEMBERS"])
            for g in groups {
                let members = g.devices.map { "\($0.address) (\($0.driver ?? "no driver"))" } + g.otherMembers
                let blockers = g.blockers
                let viable = blockers.isEmpty ? "yes" : "no: " + blockers.map { "\($0.address) on \($0.driver)" }.joined(separator: ", ")
                t.rows.append(["\(g.number)", viable, members.joined(separator: ", ")])
            }
            writeStdout(t.render(width: terminalWidth()))
        }
    }
}
