import Testing
@testable import HostPCI

@Suite struct PCIAddressTests {
    @Test(arguments: [
        ("0000:3b:00.1", "0000:3b:00.1"),
        ("3b:00.1", "0000:3b:00.1"),
        ("0000:3B:1F.7", "0000:3b:1f.7"),
        ("ABCD:ff:1f.0", "abcd:ff:1f.0"),
        ("ffff:00:00.0", "ffff:00:00.0"),
        ("00:00.0", "0000:00:00.0"),
    ])
    func parsesAndFormatsCanonically(input: String, canonical: String) throws {
        let a = try PCIAddress(parsing: input)
        #expect(a.description == canonical)
        #expect(try PCIAddress(parsing: a.description) == a)
    }

    @Test(arguments: [
        ("", "empty"),
        ("0000:3b:20.0", "device 0x20 is above 0x1f"),
        ("0000:3b:00.8", "function 8 is above 7"),
        ("10000:3b:00.0", "domain 0x10000 is above 0xffff"),
        ("0000:3b:00.1 ", "white space"),
        (" 0000:3b:00.1", "white space"),
        ("0000:3b:00.1\n", "white space"),
        ("0000:3b:00.1/", "'/'"),
        ("../0000:3b:00.1", "'/'"),
        ("0000:3b:00..1", "'..'"),
        ("0000:3b:00.1\u{0}", "NUL"),
        ("0000:3b:00.1x", "'x'"),
        ("0000:3b:00.10", "function 16 is above 7"),
        ("0000:3b:00.01", "one digit"),
        ("000:3b:00.1", "4 hex digits"),
        ("0000:3b:0.1", "device must have 2"),
        ("0000:3b:000.1", "device must have 2"),
        ("0000:b:00.1", "bus must have 2"),
        ("0000:100:00.0", "bus 0x100 is above 0xff"),
        ("0000:3b:00", "expected"),
        ("0000:3b:00.", "function is empty"),
        ("0000:3b.00.1", "expected"),
        ("3b00.1", "expected"),
        ("1:2:3:00.0", "expected"),
        ("0000:3b:00.1.2", "expected '.'"),
        ("0000:3b:00.-1", "'-'"),
        ("0x00:3b:00.1", "'x'"),
        ("3b:00.1\u{7f}", "0x7f"),
        ("0000:3b:00.1ä", "0xc3"),
        ("ffffffffffffffffff:00:00.0", "above 0xffff"),
    ])
    func rejectsWithAReason(input: String, reason: String) {
        #expect {
            _ = try PCIAddress(parsing: input)
        } throws: { error in
            guard let e = error as? HostPCIError else { return false }
            return e.code == .invalidAddress && e.message.contains(reason) && e.message.contains("expected DDDD:BB:DD.F")
        }
    }

    @Test func errorMessageEscapesControlCharacters() throws {
        do {
            _ = try PCIAddress(parsing: "00:00.0\n\u{1b}[31m")
            Issue.record("accepted a control sequence")
        } catch {
            #expect(!error.message.contains("\n"))
            #expect(!error.message.contains("\u{1b}"))
            #expect(error.message.contains("\\u{0a}"))
        }
    }

    @Test func componentInitialiserChecksRanges() throws {
        #expect(throws: HostPCIError.self) { try PCIAddress(bus: 0, device: 0x20, function: 0) }
        #expect(throws: HostPCIError.self) { try PCIAddress(bus: 0, device: 0, function: 8) }
        #expect(try PCIAddress(domain: 1, bus: 2, device: 3, function: 4).description == "0001:02:03.4")
    }

    @Test func ordersByDomainBusDeviceFunction() throws {
        let list = try ["0001:00:00.0", "0000:01:00.0", "0000:00:1f.7", "0000:00:02.1", "0000:00:02.0"].map { try PCIAddress(parsing: $0) }
        #expect(list.sorted().map(\.description) == ["0000:00:02.0", "0000:00:02.1", "0000:00:1f.7", "0000:01:00.0", "0001:00:00.0"])
    }

    @Test func sysfsNamesMustBeCanonical() {
        #expect(PCIAddress.fromSysfsName("0000:00:1c.0") != nil)
        #expect(PCIAddress.fromSysfsName("00:1c.0") == nil)
        #expect(PCIAddress.fromSysfsName("pci0000:00") == nil)
        #expect(PCIAddress.fromSysfsName("virtfn0") == nil)
    }
}
