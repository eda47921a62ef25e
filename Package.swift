// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Passage",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "passage", targets: ["passage"]),
        .executable(name: "passaged", targets: ["passaged"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
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
        // Typed owners of the KVM system, VM and vCPU file descriptors; KVM_RUN and its exits.
        .target(name: "KVM", dependencies: ["CLinux"]),
        // VFIO: container (type1v2), groups, devices: regions, interrupts, DMA mappings, reset.
        .target(name: "VFIO", dependencies: ["CLinux"]),
        // The machine: guest memory, x86-64 Linux boot, serial, i8042, PCI host bridge, VFIO passthrough, vCPU threads.
        .target(name: "VMM", dependencies: ["KVM", "VFIO", "CLZMA", "CZstd"]),
        // liblzma and libzstd: passage-vmm unpacks a bzImage's xz or zstd payload itself (docs/vmm.md, "Kernel unpacking").
        .systemLibrary(name: "CLZMA", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // Codable wire types shared by the CLI and (later) the daemon.
        .target(
            name: "PassageAPI",
            // The streaming JSON encoder keeps its state in one class; dynamic exclusivity checks on
            // every byte appended cost a third of its time. Accesses there are single-threaded and nested-free.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        // libudev: the daemon's hot-plug monitor (PCI add/remove/bind/unbind uevents).
        .systemLibrary(name: "CUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
        // SQLite, for the daemon's durable state.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // The daemon's services: HTTP API on a Unix socket, store, claims, reconciliation.
        .target(
            name: "PassageDaemon",
            dependencies: [
                "HostPCI", "SRIOV", "PassageAPI", "CSQLite", "CUdev",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "passaged",
            dependencies: [
                "PassageDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Writes sysfs-shaped fixture trees; used by tests and benchmarks, never shipped.
        .target(name: "SysfsFixtures", dependencies: ["HostPCI"]),
        .executableTarget(
            name: "passage",
            dependencies: [
                "HostPCI", "SRIOV", "PassageAPI", "PassageDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Boots one Linux guest: the standalone VMM (docs/vmm.md).
        .executableTarget(
            name: "passage-vmm",
            // Nothing but VMM/KVM, the Swift runtime and libc: no ArgumentParser, no Foundation.
            dependencies: ["VMM"],
            // One static executable (Swift runtime and glibc linked in): no ld.so, no Swift .so to
            // find, map and relocate at every start (the lab loads it over 9p under TCG, where that
            // cost seconds), fewer resident pages. The link warns that the runtime's optional
            // prespecialization lookup uses dlopen; on Linux it only does when
            // SWIFT_DEBUG_LIB_PRESPECIALIZED_PATH is set. (-static-stdlib alone keeps libc, libm,
            // libstdc++ and libgcc_s dynamic.)
            linkerSettings: [.unsafeFlags(["-static-executable"])]
        ),
        .executableTarget(
            name: "daemon-bench",
            dependencies: ["PassageDaemon", "SysfsFixtures", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/DaemonBench"
        ),
        // 100+ SIGKILLs of the daemon inside mixed claim/release/VF operations, invariants checked
        // after every restart (docs/security.md).
        .executableTarget(
            name: "crash-torture",
            dependencies: ["PassageDaemon", "SysfsFixtures", "PassageAPI", "HostPCI",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Tools/CrashTorture",
            // A script-like tool in top-level code: Swift 5 mode (no main-actor isolation of its globals).
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .executableTarget(
            name: "inventory-bench",
            dependencies: ["SysfsFixtures"],
            path: "Benchmarks/InventoryBench"
        ),
        // Exit round trip: passage-vmm's exit loop vs a minimal C KVM loop (Benchmarks/VMMExitBench/run.sh).
        .executableTarget(
            name: "vmm-exit-bench",
            dependencies: ["KVM", "VMM"],
            path: "Benchmarks/VMMExitBench",
            exclude: ["minimal-kvm-loop.c", "run.sh"]
        ),
        // Lab tool: what the VFIO layer sees of a device bound to vfio-pci, as JSON (scenario vfio-device).
        .executableTarget(name: "vfio-inspect", dependencies: ["VFIO", "CLinux"], path: "Tools/VFIOInspect"),
        .testTarget(
            name: "PassageTests",
            dependencies: [
                "HostPCI", "SRIOV", "CLinux", "PassageAPI", "PassageDaemon", "SysfsFixtures", "passage", "KVM", "VMM", "VFIO",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
