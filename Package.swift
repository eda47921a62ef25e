// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Passage",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "passage", targets: ["passage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // libpci (pciutils): names from pci.ids and capability walking.
        .systemLibrary(
            name: "CPCI",
            pkgConfig: "libpci",
            providers: [.apt(["libpci-dev"])]
        ),
        // libnl-3 / libnl-route-3 (rtnetlink VF link settings).
        .systemLibrary(
            name: "CNetlink",
            pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]
        ),
        // C shim: ioctl request numbers and variable-length structs Swift cannot spell.
        .target(name: "CLinux"),
        // Host PCI model: addresses, devices, IOMMU groups, SR-IOV topology, under a sysfs root;
        // driver binding through driver_override.
        .target(name: "HostPCI", dependencies: ["CPCI"]),
        // VF lifecycle, NVMe secondary-controller provisioning, per-VF link settings over rtnetlink.
        .target(name: "SRIOV", dependencies: ["HostPCI", "CLinux", "CNetlink"]),
        // Codable wire types shared by the CLI and (later) the daemon.
        .target(
            name: "PassageAPI",
            // The streaming JSON encoder keeps its state in one class; dynamic exclusivity checks on
            // every byte appended cost a third of its time. Accesses there are single-threaded and nested-free.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        // Writes sysfs-shaped fixture trees; used by tests and benchmarks, never shipped.
        .target(name: "SysfsFixtures", dependencies: ["HostPCI"]),
        .executableTarget(
            name: "passage",
            dependencies: [
                "HostPCI", "SRIOV", "PassageAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "inventory-bench",
            dependencies: ["SysfsFixtures"],
            path: "Benchmarks/InventoryBench"
        ),
        .testTarget(
            name: "PassageTests",
            dependencies: ["HostPCI", "SRIOV", "CLinux", "PassageAPI", "SysfsFixtures", "passage"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
