import Foundation
import Testing
@testable import HostPCI
import PassageAPI

/// Read-only checks against this machine's own /sys, compared with pciutils' lspci.
/// Nothing here writes anywhere under /sys.
@Suite struct RealSysfsTests {
    struct LspciEntry: Equatable {
        var vendorDevice: String
        var classID: String
        var revision: String?
        var progIf: String?
    }

    /// Parses `lspci -Dn` lines: `0000:00:1f.2 0106: 8086:2922 (rev 02) (prog-if 01 [AHCI 1.0])`.
    static func lspciNumeric() throws -> [String: LspciEntry] {
        let lspci = try #require(which("lspci"), "lspci (pciutils) is not installed: run scripts/setup.sh")
        let r = try runProcess(lspci, ["-Dn"])
        #expect(r.status == 0, "lspci -Dn failed: \(r.stderr)")
        var entries: [String: LspciEntry] = [:]
        for line in r.text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 3 else { continue }
            var e = LspciEntry(vendorDevice: String(f[2]), classID: String(f[1].dropLast()))
            if let i = f.firstIndex(of: "(rev") { e.revision = String(f[i + 1].prefix(2)) }
            if let i = f.firstIndex(of: "(prog-if") { e.progIf = String(f[i + 1].prefix(2)) }
            entries[String(f[0])] = e
        }
        return entries
    }

    /// Parses `lspci -D -vmm -k` records into field dictionaries by slot.
    static func lspciMachine() throws -> [String: [String: String]] {
        let lspci = try #require(which("lspci"))
        let r = try runProcess(lspci, ["-D", "-vmm", "-k"])
        var records: [String: [String: String]] = [:]
        for block in r.text.components(separatedBy: "\n\n") {
            var fields: [String: String] = [:]
            for line in block.split(separator: "\n") {
                guard let tab = line.firstIndex(of: "\t") else { continue }
                fields[String(line[..<tab].dropLast())] = String(line[line.index(after: tab)...])
            }
            if let slot = fields["Slot"] { records[slot] = fields }
        }
        return records
    }

    @Test func sameDevicesIdsAndClassesAsLspci() throws {
        let expected = try Self.lspciNumeric()
        let devices = try PCIInventory(root: .system).devices()
        #expect(!devices.isEmpty, "the build machine has PCI devices")
        #expect(Set(devices.map(\.address.description)) == Set(expected.keys))
        for d in devices {
            let e = try #require(expected[d.address.description])
            #expect("\(hex(d.vendorID, 4)):\(hex(d.deviceID, 4))" == e.vendorDevice, "\(d.address)")
            #expect(hex(d.classID, 4) == e.classID, "\(d.address)")
            // lspci prints the revision and programming interface only when non-zero.
            #expect((d.revision == 0 ? nil : d.revision.map { hex($0, 2) }) == e.revision, "\(d.address)")
            let progIf = UInt8(d.classCode & 0xff)
            #expect((progIf == 0 ? nil : hex(progIf, 2)) == e.progIf, "\(d.address)")
        }
    }

    @Test func sameNamesAndDriversAsLspci() throws {
        let records = try Self.lspciMachine()
        for d in try PCIInventory(root: .system).devices() {
            let r = try #require(records[d.address.description])
            // lspci prints "Device 0d57" where pci.ids has no name; Passage gives null.
            #expect((d.names.vendor ?? "Vendor \(hex(d.vendorID, 4))") == r["Vendor"], "\(d.address)")
            #expect((d.names.device ?? "Device \(hex(d.deviceID, 4))") == r["Device"], "\(d.address)")
            #expect(d.names.deviceClass.map { $0 } == r["Class"].map { $0.hasPrefix("Class ") ? nil : $0 } ?? nil
                    || d.names.deviceClass == nil, "\(d.address)")
            #expect(d.driver == r["Driver"], "\(d.address)")
            #expect(d.numaNode == r["NUMANode"].flatMap { Int($0) }, "\(d.address)")
            #expect(d.iommuGroup == r["IOMMUGroup"].flatMap { Int($0) }, "\(d.address)")
        }
    }

    @Test func capabilitiesMatchLspciVerbose() throws {
        guard geteuid() == 0 else {
            // Non-root readers see 64 bytes of configuration space: capabilities must be reported unknown.
            #expect(try PCIInventory(root: .system).devices().allSatisfy { $0.capabilities == nil })
            return
        }
        let lspci = try #require(which("lspci"))
        for d in try PCIInventory(root: .system).devices() {
            let verbose = try runProcess(lspci, ["-vvv", "-s", d.address.description]).text
            let caps = try #require(d.capabilities, "\(d.address) capabilities unread as root")
            if let m = caps.msix {
                #expect(verbose.contains("MSI-X: Enable\(m.enabled ? "+" : "-") Count=\(m.tableSize)"), "\(d.address)")
                #expect(verbose.contains("Vector table: BAR=\(m.tableBAR) offset=\(hex(m.tableOffset, 8))"), "\(d.address)")
            } else {
                #expect(!verbose.contains("MSI-X:"), "\(d.address)")
            }
            #expect((caps.msi != nil) == verbose.contains("MSI: Enable"), "\(d.address)")
            #expect((caps.pciExpress != nil) == verbose.contains("Express ("), "\(d.address)")
        }
    }

    @Test func cliJSONMatchesTheLibraryOnRealSysfs() throws {
        let r = try runProcess(try passageBinary(), ["devices", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let wire = try JSONDecoder().decode([DeviceInfo].self, from: r.stdout)
        let library = try PCIInventory(root: .system).devices()
        #expect(wire.map(\.address) == library.map(\.address.description))
        #expect(wire.map(\.driver) == library.map(\.driver))
        #expect(wire.map(\.classCode) == library.map { hex($0.classCode, 6) })
    }
}
