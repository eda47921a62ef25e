import Foundation
import Testing

/// The shipped systemd units and udev rules, checked with the real systemd tools on this machine.
@Suite struct SystemdUnitTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The units with ExecStart pointing at the binary just built (verify wants it to exist).
    func stagedUnits() throws -> String {
        let dir = NSTemporaryDirectory() + "passage-units-\(getpid())-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let passaged = URL(fileURLWithPath: try passageBinary()).deletingLastPathComponent().appendingPathComponent("passaged").path
        let service = try String(contentsOf: Self.repo.appendingPathComponent("systemd/passaged.service"), encoding: .utf8)
        #expect(service.contains("ExecStart=/usr/local/bin/passaged "))
        try service.replacingOccurrences(of: "/usr/local/bin/passaged", with: passaged).write(toFile: dir + "/passaged.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: Self.repo.appendingPathComponent("systemd/passaged.socket").path, toPath: dir + "/passaged.socket")
        return dir
    }

    @Test func unitsVerify() throws {
        let dir = try stagedUnits()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try runProcess("/usr/bin/systemd-analyze", ["verify", dir + "/passaged.service", dir + "/passaged.socket"])
        #expect(r.status == 0 && r.stderr.isEmpty, "\(r.stderr)")
    }

    /// docs/security.md records the exposure score; a change that makes it worse fails here.
    @Test func securityScoreIsAtMostTheDocumentedOne() throws {
        let dir = try stagedUnits()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try runProcess("/usr/bin/systemd-analyze", ["security", "--offline=yes", "--no-pager", dir + "/passaged.service"])
        let text = r.text + r.stderr
        let line = try #require(text.split(separator: "\n").first { $0.contains("Overall exposure level") }, "\(text)")
        let score = try #require(Double(line.split(separator: ":").last!.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? ""))
        let doc = try String(contentsOf: Self.repo.appendingPathComponent("docs/security.md"), encoding: .utf8)
        let documented = try #require(doc.firstRange(of: /\*\*([0-9.]+) OK\*\*/).flatMap { Double(doc[$0].dropFirst(2).split(separator: " ").first ?? "") })
        #expect(score <= documented, "systemd-analyze security says \(score), docs/security.md promises \(documented)")
        let socket = try String(contentsOf: Self.repo.appendingPathComponent("systemd/passaged.socket"), encoding: .utf8)
        #expect(socket.contains("SocketMode=0660") && socket.contains("SocketGroup=passage"))
    }

    /// The rules only tag and set permissions: no RUN, PROGRAM or IMPORT{program} that could block udev.
    @Test func udevRulesRunNothing() throws {
        let rules = try String(contentsOf: Self.repo.appendingPathComponent("udev/70-passage.rules"), encoding: .utf8)
        let active = rules.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        #expect(active.count == 4)
        #expect(!active.contains { $0.contains("RUN") || $0.contains("PROGRAM") || $0.contains("IMPORT") })
        #expect(active.contains { $0.contains("SUBSYSTEM==\"pci\"") && $0.contains("TAG+=\"passage\"") })
        #expect(active.contains { $0.contains("SUBSYSTEM==\"vfio\"") && $0.contains("GROUP=\"passage\"") && $0.contains("MODE=\"0660\"") })
        #expect(active.contains { $0.contains("SUBSYSTEM==\"vfio-dev\"") && $0.contains("GROUP=\"passage\"") && $0.contains("MODE=\"0660\"") })
        #expect(active.contains { $0.contains("KERNEL==\"iommu\"") && $0.contains("GROUP=\"passage\"") && $0.contains("MODE=\"0660\"") })
    }

    /// install.sh into a DESTDIR puts every file in place, with ExecStart at the prefix, and
    /// --uninstall takes them away again.
    @Test func installAndUninstallIntoADestdir() throws {
        let dest = NSTemporaryDirectory() + "passage-destdir-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dest) }
        let bin = URL(fileURLWithPath: try passageBinary()).deletingLastPathComponent().path
        // --no-build uses the release binaries when they exist; the debug ones stand in here.
        let script = Self.repo.appendingPathComponent("scripts/install.sh").path
        let r = try runProcess("/bin/bash", ["-c", "PASSAGE_INSTALL_BIN=\(bin) bash \(script) --no-build --prefix /opt/passage --destdir \(dest)"])
        #expect(r.status == 0, "\(r.text) \(r.stderr)")
        for f in ["/opt/passage/bin/passage", "/opt/passage/bin/passaged", "/opt/passage/bin/passage-vmm", "/usr/lib/udev/rules.d/70-passage.rules",
                  "/usr/lib/systemd/system/passaged.service", "/usr/lib/systemd/system/passaged.socket",
                  "/opt/passage/share/doc/passage/configuration.md", "/etc/passage/passage.toml.example"] {
            #expect(FileManager.default.fileExists(atPath: dest + f), "\(f) missing")
        }
        let unit = try String(contentsOfFile: dest + "/usr/lib/systemd/system/passaged.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/opt/passage/bin/passaged "))
        let u = try runProcess("/bin/bash", [script, "--uninstall", "--prefix", "/opt/passage", "--destdir", dest])
        #expect(u.status == 0)
        #expect(!FileManager.default.fileExists(atPath: dest + "/opt/passage/bin/passaged"))
        #expect(!FileManager.default.fileExists(atPath: dest + "/usr/lib/systemd/system/passaged.service"))
    }
}
