import Foundation
import Testing
import PassageAPI
import SysfsFixtures

/// Runs the real `passage` binary against a fixture tree and checks the documented JSON contract,
/// the filters, the exit statuses and the error messages.
@Suite final class CLIContractTests {
    let fixture: SysfsFixture
    let passage: String

    init() throws {
        fixture = try SysfsFixture()
        try StandardFixtures.small(in: fixture)
        passage = try passageBinary()
    }

    deinit { fixture.remove() }

    func run(_ args: String...) throws -> ProcessResult {
        try runProcess(passage, args + ["--sysfs-root", fixture.root.path])
    }

    func jsonArray(_ args: String...) throws -> [[String: Any]] {
        let r = try runProcess(passage, args + ["--json", "--sysfs-root", fixture.root.path])
        #expect(r.status == 0, "passage \(args) failed: \(r.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: r.stdout) as? [[String: Any]])
    }

    static func isHex(_ v: Any?, digits: Int) -> Bool {
        guard let s = v as? String else { return false }
        return s.count == digits && s.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    @Test func devicesJSONContract() throws {
        let list = try jsonArray("devices")
        #expect(list.count == 10)
        for d in list {
            let address = try #require(d["address"] as? String)
            #expect(Self.isHex(d["vendorId"], digits: 4), "\(address)")
            #expect(Self.isHex(d["deviceId"], digits: 4), "\(address)")
            #expect(Self.isHex(d["classCode"], digits: 6), "\(address)")
            for key in ["vendorName", "deviceName", "driver", "iommuGroup", "numaNode", "physfn", "vfIndex", "sriov"] {
                #expect(d.keys.contains(key), "\(address) lacks \(key)")
            }
            #expect(d["driver"] is String || d["driver"] is NSNull)
            #expect(d["iommuGroup"] is Int || d["iommuGroup"] is NSNull)
        }
        let byAddress = Dictionary(uniqueKeysWithValues: list.map { ($0["address"] as! String, $0) })
        let pf = try #require(byAddress["0000:01:00.0"])
        #expect(pf["vendorId"] as? String == "8086" && pf["deviceId"] as? String == "1572")
        #expect(pf["classCode"] as? String == "020000")
        #expect(pf["vendorName"] as? String == "Intel Corporation")
        #expect(pf["iommuGroup"] as? Int == 10 && pf["numaNode"] as? Int == 0)
        let sriov = try #require(pf["sriov"] as? [String: Any])
        #expect(sriov["totalVFs"] as? Int == 64 && sriov["numVFs"] as? Int == 2)
        #expect(sriov["driversAutoprobe"] as? Bool == true)
        #expect(sriov["vfs"] as? [String] == ["0000:01:02.0", "0000:01:02.1"])
        let vf = try #require(byAddress["0000:01:02.1"])
        #expect(vf["physfn"] as? String == "0000:01:00.0" && vf["vfIndex"] as? Int == 1)
        #expect(vf["sriov"] is NSNull)
        let unbound = try #require(byAddress["0000:00:03.0"])
        #expect(unbound["driver"] is NSNull && unbound["numaNode"] is NSNull)
        #expect(byAddress["0000:00:04.0"]?["driverOverride"] as? String == "vfio-pci")
    }

    @Test func jsonDecodesIntoTheWireTypes() throws {
        let r = try run("devices", "--json")
        let devices = try JSONDecoder().decode([DeviceInfo].self, from: r.stdout)
        let pf = try #require(devices.first { $0.address == "0000:01:00.0" })
        #expect(pf.capabilities?.msix?.tableSize == 129 && pf.capabilities?.sriov?.vfDeviceId == "154c")
        #expect(pf.bars.map(\.start) == ["0xfb000000", "0xfb800000"])
        #expect(pf.upstream == ["0000:00:1c.0"])
    }

    @Test(arguments: [
        (["--class", "02"], ["0000:00:03.0", "0000:01:00.0", "0000:01:02.0", "0000:01:02.1", "0000:05:00.0", "0000:05:00.1"]),
        (["--class", "0108"], ["0000:00:04.0"]),
        (["--class", "060400"], ["0000:00:1c.0"]),
        (["--vendor", "8086:1572"], ["0000:01:00.0"]),
        (["--vendor", "1af4"], ["0000:00:03.0"]),
        (["--driver", "none"], ["0000:00:00.0", "0000:00:03.0", "0000:00:1e.0", "0000:05:00.1"]),
        (["--driver", "vfio-pci"], ["0000:00:04.0", "0000:01:02.0"]),
        (["--sriov"], ["0000:01:00.0", "0000:01:02.0", "0000:01:02.1"]),
        (["--sriov", "--driver", "iavf"], ["0000:01:02.1"]),
    ])
    func filters(args: [String], expected: [String]) throws {
        let r = try runProcess(passage, ["devices", "--json", "--sysfs-root", fixture.root.path] + args)
        #expect(r.status == 0, "\(r.stderr)")
        let list = try JSONDecoder().decode([DeviceInfo].self, from: r.stdout)
        #expect(list.map(\.address) == expected)
    }

    @Test(arguments: [["--class", "2"], ["--class", "zz"], ["--vendor", "80861"], ["--vendor", "8086:"], ["--vendor", "xyz1"]])
    func badFiltersAreUsageErrors(args: [String]) throws {
        let r = try runProcess(passage, ["devices", "--sysfs-root", fixture.root.path] + args)
        #expect(r.status == 64, "\(args): \(r.stderr)")
        #expect(r.stderr.contains(args[0]))
        #expect(r.stdout.isEmpty)
    }

    @Test func showOneDevice() throws {
        let r = try run("devices", "show", "01:02.1", "--json")
        #expect(r.status == 0)
        let d = try JSONDecoder().decode(DeviceInfo.self, from: r.stdout)
        #expect(d.address == "0000:01:02.1" && d.physfn == "0000:01:00.0" && d.vfIndex == 1 && d.driver == "iavf")
        // "key   value" lines, the keys padded to one column.
        var fields: [String: String] = [:]
        for line in try run("devices", "show", "0000:05:00.0").text.split(separator: "\n") {
            guard let gap = line.range(of: "  ") else { continue }
            fields[String(line[..<gap.lowerBound])] = line[gap.upperBound...].trimmingCharacters(in: .whitespaces)
        }
        #expect(fields["iommu group"] == "5 (with 0000:00:1e.0, 0000:05:00.1)")
        #expect(fields["driver"] == "e1000")
        #expect(fields["upstream"] == "0000:00:1e.0")
        #expect(fields["bar 1"] == "io at 0xc000, size 64 B")
        #expect(fields["msi"] == "1 vectors, 64-bit")
    }

    @Test func errorsNameTheDeviceAndTheFix() throws {
        let bad = try run("devices", "show", "0000:01:00.9")
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("invalid PCI address \"0000:01:00.9\": function 9 is above 7"))
        let missing = try run("devices", "show", "0000:7f:00.0")
        #expect(missing.status == 66)
        #expect(missing.stderr.contains("no PCI device 0000:7f:00.0") && missing.stderr.contains("passage devices"))
        let jsonError = try run("devices", "show", "0000:7f:00.0", "--json")
        #expect(jsonError.status == 66 && jsonError.stdout.isEmpty)
        let body = try JSONDecoder().decode([String: ErrorInfo].self, from: Data(jsonError.stderr.utf8))
        #expect(body["error"]?.code == "device-not-found")
        let noRoot = try runProcess(passage, ["devices", "--sysfs-root", fixture.root.path + "/absent"])
        #expect(noRoot.status == 69)
        #expect(noRoot.stderr.contains("absent/bus/pci/devices"))
    }

    @Test func groupsShowViabilityAndBlockers() throws {
        let r = try run("groups", "--json")
        let groups = try JSONDecoder().decode([IOMMUGroupInfo].self, from: r.stdout)
        let shared = try #require(groups.first { $0.group == 5 })
        #expect(shared.devices.map(\.address) == ["0000:00:1e.0", "0000:05:00.0", "0000:05:00.1"])
        #expect(!shared.viable && shared.blockers.map(\.address) == ["0000:05:00.0"])
        #expect(groups.first { $0.group == 20 }?.viable == true)
        let table = try run("groups").text
        #expect(table.contains("no: 0000:05:00.0 on e1000"))
    }

    @Test func treeNestsVFsUnderTheirPF() throws {
        let r = try run("devices", "--tree", "--json")
        let groups = try JSONDecoder().decode([TopologyGroup].self, from: r.stdout)
        let pfGroup = try #require(groups.first { $0.group == 10 })
        #expect(pfGroup.devices.map(\.address) == ["0000:01:00.0"])
        #expect(pfGroup.devices[0].vfs?.map(\.address) == ["0000:01:02.0", "0000:01:02.1"])
        #expect(pfGroup.devices[0].vfs?.map(\.iommuGroup) == [20, 21])
        // VFs drawn under their PF do not appear again in their own groups.
        #expect(!groups.contains { $0.group == 20 || $0.group == 21 })
        #expect(groups.first { $0.group == 5 }?.devices.count == 3)
        let text = try run("devices", "--tree").text
        #expect(text.contains("IOMMU group 10\n└─ 0000:01:00.0  8086:1572"))
        #expect(text.contains("   ├─ vf0 0000:01:02.0  8086:154c"))
        // Filtering to VFs alone shows them in their own groups.
        let vfsOnly = try JSONDecoder().decode([TopologyGroup].self, from: try run("devices", "--tree", "--json", "--vendor", "8086:154c").stdout)
        #expect(vfsOnly.compactMap(\.group) == [20, 21])
    }

    @Test func tableForPeople() throws {
        let text = try run("devices").text
        let lines = text.split(separator: "\n")
        #expect(lines.first?.hasPrefix("ADDRESS       IDS        CLASS") == true)
        #expect(lines.count == 11)
        #expect(text.contains("PF 2/64 VFs"))
        #expect(text.contains("VF 1 of 0000:01:00.0"))
    }
}
