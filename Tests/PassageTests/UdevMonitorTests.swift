import Foundation
import Testing
@testable import PassageDaemon

/// The hot-plug monitor against the real kernel's uevent netlink socket (read-only: nothing here
/// makes an event; the lab's daemon scenario removes and rescans real devices for that).
@Suite struct UdevMonitorTests {
    @Test func opensTheRealKernelSourceAndStopsPromptly() async throws {
        let monitor = try UdevMonitor(source: .kernel)
        #expect(monitor.source == .kernel)
        let started = Date()
        let finished = try await blocking { () -> Double in
            let stopper = Thread { Thread.sleep(forTimeInterval: 0.2); monitor.stop() }
            stopper.start()
            monitor.run { _, _ in }
            return Date().timeIntervalSince(started)
        }
        #expect(finished >= 0.2 && finished < 5, "run() returned \(finished) s after start; stop() came at 0.2 s")
    }

    @Test func automaticSourceFollowsUdevd() {
        let udevd = access("/run/udev/control", F_OK) == 0
        #expect(UdevMonitor.Source.automatic == (udevd ? .udev : .kernel))
    }

    @Test func eventsNameTheirPCIFunction() {
        let e = UdevMonitor.Event(action: "add", subsystem: "pci", sysname: "0000:3b:02.1", devpath: "/devices/pci0000:3a/0000:3a:00.0/0000:3b:02.1")
        #expect(e.address?.description == "0000:3b:02.1")
        #expect(UdevMonitor.Event(action: "add", subsystem: "net", sysname: "eth0", devpath: "/devices/virtual/net/eth0").address == nil)
        #expect(UdevMonitor.Event(action: "add", subsystem: "pci", sysname: "pci0000:00", devpath: "/devices/pci0000:00").address == nil)
    }

    /// Event times: the hand-made formatter agrees with Foundation's ISO 8601 one.
    @Test(arguments: [0.0, 1_764_100_319.123, 1_764_100_319.9999, 951_782_400.5, 4_102_444_799.001])
    func eventTimesAreRFC3339(_ t: Double) {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let d = Date(timeIntervalSince1970: t)
        #expect(rfc3339(d) == f.string(from: d))
    }
}
