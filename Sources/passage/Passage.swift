import ArgumentParser

@main
struct Passage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passage",
        abstract: "SR-IOV and PCI passthrough device manager.",
        discussion: "Lists the host's PCI devices, IOMMU groups and SR-IOV functions. Every command takes --json.",
        version: "0.1.0",
        subcommands: [Devices.self, Groups.self, VF.self, Bind.self, Restore.self, NVMe.self, Claim.self, Release.self, Claims.self, Pools.self, PolicyCommand.self, VMCommand.self, Events.self, Status.self]
    )
}
