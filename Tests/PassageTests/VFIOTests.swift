import Foundation
import Testing
@testable import VFIO
@testable import VMM

/// The VFIO layer on this machine (which has no IOMMU, so no /dev/vfio: the error paths are the
/// real ones) and the region-capability parser on hand-made kernel answers. The lab's
/// vfio-device scenario opens a real VF through it.
@Suite struct VFIOTests {
    @Test func aMissingContainerNodeSaysWhatToDo() {
        do {
            _ = try VFIOContainer(path: "/nonexistent/vfio/vfio")
            Issue.record("opened a container that does not exist")
        } catch {
            #expect(error.code == .unavailable && error.message.contains("modprobe vfio-pci") && error.message.contains("iommu"), "\(error)")
        }
    }

    @Test func notAVFIONodeIsRefused() throws {
        let path = NSTemporaryDirectory() + "not-vfio-\(getpid())"
        #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try VFIOContainer(path: path)
            Issue.record("a regular file passed as a VFIO container")
        } catch {
            #expect(error.code == .unsupported, "\(error)")
        }
    }

    @Test func aGroupThatIsNotThereNamesTheFix() {
        do {
            _ = try VFIOGroup(number: 4242, directory: NSTemporaryDirectory())
            Issue.record("opened a group that does not exist")
        } catch {
            #expect(error.code == .unavailable && error.message.contains("4242") && error.message.contains("passage bind --group"), "\(error)")
        }
    }

    /// iommufd on this machine's real /dev (no /dev/iommu here): the error names the option that
    /// avoids it; and a real PCI function of this machine has no VFIO cdev (not bound to vfio-pci).
    @Test func iommufdAbsentOnThisMachineSaysWhatToDo() throws {
        if access("/dev/iommu", F_OK) != 0 {
            do {
                _ = try IOMMUFD()
                Issue.record("opened /dev/iommu that does not exist")
            } catch {
                #expect(error.code == .unavailable && error.message.contains("--vfio-backend type1") && error.message.contains("CONFIG_IOMMUFD"), "\(error)")
            }
        }
        let functions = try FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices").sorted()
        let unbound = try #require(functions.first { IOMMUFD.deviceNode(of: $0) == nil }, "every function has a VFIO cdev?")
        #expect(!IOMMUFD.canServe([unbound]))
        do {
            _ = try VFIODeviceFile(address: unbound)
            Issue.record("opened a VFIO cdev for \(unbound), which is not bound to vfio-pci")
        } catch {
            #expect(error.code == .unavailable && error.message.contains(unbound) && error.message.contains("vfio-dev"), "\(error)")
        }
    }

    /// Finding a function's cdev through sysfs (`vfio-dev/vfioN`) and deciding whether iommufd
    /// can serve a set of functions, on a fixture sysfs and /dev.
    @Test func cdevDiscoveryOnAFixtureTree() throws {
        let root = NSTemporaryDirectory() + "vfio-cdev-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        let a = "0000:01:00.1", b = "0000:01:00.2"
        try fm.createDirectory(atPath: "\(root)/sys/bus/pci/devices/\(a)/vfio-dev/vfio3", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/sys/bus/pci/devices/\(b)", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/dev/vfio/devices", withIntermediateDirectories: true)
        #expect(fm.createFile(atPath: "\(root)/dev/vfio/devices/vfio3", contents: nil))
        let sysfs = "\(root)/sys", dev = "\(root)/dev"
        #expect(IOMMUFD.deviceNode(of: a, sysfs: sysfs, dev: dev) == "\(dev)/vfio/devices/vfio3")
        #expect(IOMMUFD.deviceNode(of: b, sysfs: sysfs, dev: dev) == nil)
        #expect(!IOMMUFD.canServe([a], sysfs: sysfs, dev: dev))             // no /dev/iommu yet
        #expect(fm.createFile(atPath: "\(dev)/iommu", contents: nil))
        #expect(IOMMUFD.canServe([a], sysfs: sysfs, dev: dev))
        #expect(!IOMMUFD.canServe([a, b], sysfs: sysfs, dev: dev))          // b has no cdev: all or none
        #expect(IOMMUFD.canServe([], sysfs: sysfs, dev: dev))
        // passage-vmm's choice: auto takes iommufd only when it serves every device; an explicit
        // backend is kept (and fails later, with its own error, if it cannot work).
        #expect(PassthroughSet.choose(.auto, for: [a], sysfs: sysfs, dev: dev) == .iommufd)
        #expect(PassthroughSet.choose(.auto, for: [a, b], sysfs: sysfs, dev: dev) == .type1)
        #expect(PassthroughSet.choose(.type1, for: [a], sysfs: sysfs, dev: dev) == .type1)
        #expect(PassthroughSet.choose(.iommufd, for: [b], sysfs: sysfs, dev: dev) == .iommufd)
        // A cdev node that is not a VFIO device: opening works, the bind is refused by the kernel.
        let file = try VFIODeviceFile(address: a, sysfs: sysfs, dev: dev)
        #expect(file.path == "\(dev)/vfio/devices/vfio3" && file.descriptor >= 0)
    }

    /// A region-info answer as the kernel writes it: the 32-byte vfio_region_info, then a
    /// sparse-mmap capability (2 areas, around an MSI-X table page) and an MSI-X-mappable one.
    static func regionAnswer(loop: Bool = false) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 32 + 48 + 8)
        func put(_ v: UInt64, _ at: Int, _ size: Int) { for i in 0..<size { b[at + i] = UInt8((v >> (8 * UInt64(i))) & 0xff) } }
        put(1, 32, 2); put(1, 34, 2); put(80, 36, 4)              // sparse mmap, version 1, next 80
        put(2, 40, 4)                                             // nr_areas
        put(0, 48, 8); put(0x2000, 56, 8)                         // [0, 0x2000)
        put(0x3000, 64, 8); put(0x1000, 72, 8)                    // [0x3000, 0x4000)
        put(3, 80, 2); put(1, 82, 2); put(loop ? 32 : 0, 84, 4)   // MSI-X mappable, next 0 (or back to the first)
        return b
    }

    @Test func regionCapabilityChain() {
        var r = VFIODevice.Region(index: 0, flags: 0, size: 0x4000, offset: 0, sparseAreas: [], msixMappable: false)
        VFIODevice.parseCapabilities(Self.regionAnswer(), first: 32, into: &r)
        #expect(r.sparseAreas == [.init(offset: 0, size: 0x2000), .init(offset: 0x3000, size: 0x1000)])
        #expect(r.msixMappable)
        // A chain that loops, or points outside the answer, ends instead of running away.
        var looped = VFIODevice.Region(index: 0, flags: 0, size: 0x4000, offset: 0, sparseAreas: [], msixMappable: false)
        VFIODevice.parseCapabilities(Self.regionAnswer(loop: true), first: 32, into: &looped)
        #expect(looped.sparseAreas.count == 2)
        var outside = VFIODevice.Region(index: 0, flags: 0, size: 0x4000, offset: 0, sparseAreas: [], msixMappable: false)
        VFIODevice.parseCapabilities(Self.regionAnswer(), first: 4000, into: &outside)
        VFIODevice.parseCapabilities(Array(Self.regionAnswer().prefix(50)), first: 32, into: &outside)
        #expect(outside.sparseAreas.isEmpty && !outside.msixMappable)
    }
}
