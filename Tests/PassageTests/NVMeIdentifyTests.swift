import HostPCI
import SRIOV
import Testing

// Builders for recorded-style Identify buffers (little-endian), shared by the NVMe tests.

func nvmePut16(_ b: inout [UInt8], _ offset: Int, _ v: UInt16) {
    b[offset] = UInt8(v & 0xff)
    b[offset + 1] = UInt8(v >> 8)
}

func nvmePut32(_ b: inout [UInt8], _ offset: Int, _ v: UInt32) {
    nvmePut16(&b, offset, UInt16(v & 0xffff))
    nvmePut16(&b, offset + 2, UInt16(v >> 16))
}

func nvmePutASCII(_ b: inout [UInt8], _ offset: Int, _ length: Int, _ s: String) {
    let bytes = Array(s.utf8) + Array(repeating: UInt8(ascii: " "), count: max(0, length - s.utf8.count))
    for i in 0..<length { b[offset + i] = bytes[i] }
}

/// Identify Controller data as QEMU's nvme device returns it (the fields Passage reads).
func nvmeIdentifyControllerBytes(controllerID: UInt16 = 0, oacs: UInt16 = 0x000e) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 4096)
    nvmePut16(&b, 0, 0x1b36)
    nvmePut16(&b, 2, 0x1af4)
    nvmePutASCII(&b, 4, 20, "deadbeef")
    nvmePutASCII(&b, 24, 40, "QEMU NVMe Ctrl")
    nvmePutASCII(&b, 64, 8, "7.2.0")
    nvmePut16(&b, 78, controllerID)
    nvmePut32(&b, 80, 0x0001_0400)
    b[111] = 1
    nvmePut16(&b, 256, oacs)
    return b
}

/// Primary Controller Capabilities data from a capabilities value (the inverse of the parser).
func nvmePrimaryCapabilitiesBytes(_ c: NVMePrimaryControllerCapabilities) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 4096)
    nvmePut16(&b, 0, c.controllerID)
    nvmePut16(&b, 2, c.portID)
    b[4] = c.resourceTypes
    nvmePut32(&b, 32, c.vqFlexibleTotal)
    nvmePut32(&b, 36, c.vqFlexibleAssigned)
    nvmePut16(&b, 40, c.vqFlexibleAllocatedToPrimary)
    nvmePut16(&b, 42, c.vqPrivateTotal)
    nvmePut16(&b, 44, c.vqFlexibleSecondaryMaximum)
    nvmePut16(&b, 46, c.vqGranularity)
    nvmePut32(&b, 64, c.viFlexibleTotal)
    nvmePut32(&b, 68, c.viFlexibleAssigned)
    nvmePut16(&b, 72, c.viFlexibleAllocatedToPrimary)
    nvmePut16(&b, 74, c.viPrivateTotal)
    nvmePut16(&b, 76, c.viFlexibleSecondaryMaximum)
    nvmePut16(&b, 78, c.viGranularity)
    return b
}

/// A Secondary Controller List: count in byte 0, 32-byte entries from byte 32.
func nvmeSecondaryListBytes(_ list: [NVMeSecondaryController]) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 4096)
    b[0] = UInt8(list.count)
    for (i, s) in list.enumerated() {
        let o = 32 + 32 * i
        nvmePut16(&b, o, s.controllerID)
        nvmePut16(&b, o + 2, s.primaryControllerID)
        b[o + 4] = s.isOnline ? 1 : 0
        nvmePut16(&b, o + 8, s.vfNumber)
        nvmePut16(&b, o + 10, s.queues)
        nvmePut16(&b, o + 12, s.interrupts)
    }
    return b
}

/// What QEMU 7.2 reports for `sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=10`
/// (as seen in the lab), with the primary holding `primaryVQ`/`primaryVI` flexible resources.
func nvmeQEMUCapabilities(primaryVQ: UInt16 = 0, primaryVI: UInt16 = 0, assignedVQ: UInt32 = 0, assignedVI: UInt32 = 0) -> NVMePrimaryControllerCapabilities {
    NVMePrimaryControllerCapabilities(
        controllerID: 0, portID: 0, resourceTypes: 0x3,
        vqFlexibleTotal: 8, vqFlexibleAssigned: assignedVQ, vqFlexibleAllocatedToPrimary: primaryVQ,
        vqPrivateTotal: 5, vqFlexibleSecondaryMaximum: 2, vqGranularity: 1,
        viFlexibleTotal: 4, viFlexibleAssigned: assignedVI, viFlexibleAllocatedToPrimary: primaryVI,
        viPrivateTotal: 6, viFlexibleSecondaryMaximum: 1, viGranularity: 1)
}

/// Parsing Identify data structures from byte buffers laid out as the NVMe base spec 2.0 says.
@Suite struct NVMeIdentifyTests {
    @Test func parsesIdentifyController() throws {
        let id = try NVMeControllerIdentity(parsing: nvmeIdentifyControllerBytes(controllerID: 0x0005, oacs: 0x008e))
        #expect(id.vendorID == 0x1b36)
        #expect(id.subsystemVendorID == 0x1af4)
        #expect(id.serialNumber == "deadbeef")
        #expect(id.modelNumber == "QEMU NVMe Ctrl")
        #expect(id.firmwareRevision == "7.2.0")
        #expect(id.controllerID == 5)
        #expect(id.versionString == "1.4.0")
        #expect(id.controllerType == 1)
        #expect(id.supportsVirtualizationManagement)
        #expect(try !NVMeControllerIdentity(parsing: nvmeIdentifyControllerBytes(oacs: 0x000e)).supportsVirtualizationManagement)
    }

    @Test func parsesPrimaryControllerCapabilitiesAtSpecOffsets() throws {
        // Distinct values in every field so a wrong offset shows.
        var b = [UInt8](repeating: 0, count: 4096)
        nvmePut16(&b, 0, 0x0102)
        nvmePut16(&b, 2, 0x0304)
        b[4] = 0x03
        nvmePut32(&b, 32, 0x0001_0011)
        nvmePut32(&b, 36, 0x0001_0012)
        nvmePut16(&b, 40, 0x0013)
        nvmePut16(&b, 42, 0x0014)
        nvmePut16(&b, 44, 0x0015)
        nvmePut16(&b, 46, 0x0016)
        nvmePut32(&b, 64, 0x0002_0021)
        nvmePut32(&b, 68, 0x0002_0022)
        nvmePut16(&b, 72, 0x0023)
        nvmePut16(&b, 74, 0x0024)
        nvmePut16(&b, 76, 0x0025)
        nvmePut16(&b, 78, 0x0026)
        let c = try NVMePrimaryControllerCapabilities(parsing: b)
        #expect(c.controllerID == 0x0102)
        #expect(c.portID == 0x0304)
        #expect(c.supports(.queue) && c.supports(.interrupt))
        #expect([c.vqFlexibleTotal, c.vqFlexibleAssigned] == [0x0001_0011, 0x0001_0012])
        #expect([c.vqFlexibleAllocatedToPrimary, c.vqPrivateTotal, c.vqFlexibleSecondaryMaximum, c.vqGranularity] == [0x13, 0x14, 0x15, 0x16])
        #expect([c.viFlexibleTotal, c.viFlexibleAssigned] == [0x0002_0021, 0x0002_0022])
        #expect([c.viFlexibleAllocatedToPrimary, c.viPrivateTotal, c.viFlexibleSecondaryMaximum, c.viGranularity] == [0x23, 0x24, 0x25, 0x26])
    }

    @Test func accountsFlexibleResources() throws {
        let c = try NVMePrimaryControllerCapabilities(parsing: nvmePrimaryCapabilitiesBytes(
            nvmeQEMUCapabilities(primaryVQ: 2, primaryVI: 1, assignedVQ: 4, assignedVI: 2)))
        #expect(c.free(.queue) == 2)
        #expect(c.free(.interrupt) == 1)
        #expect(c.secondaryMaximum(.queue) == 2)
        #expect(c.granularity(.interrupt) == 1)
        var none = c
        none.resourceTypes = 0x1
        #expect(none.supports(.queue) && !none.supports(.interrupt))
    }

    @Test func parsesTheSecondaryControllerList() throws {
        let list = try NVMeSecondaryController.parseList(nvmeSecondaryListBytes([
            NVMeSecondaryController(controllerID: 1, primaryControllerID: 0, isOnline: true, vfNumber: 1, queues: 2, interrupts: 1),
            NVMeSecondaryController(controllerID: 2, primaryControllerID: 0, isOnline: false, vfNumber: 2, queues: 0, interrupts: 0),
            // ids need not follow VF numbers
            NVMeSecondaryController(controllerID: 0x21, primaryControllerID: 0x20, isOnline: false, vfNumber: 4, queues: 3, interrupts: 2),
            NVMeSecondaryController(controllerID: 0x30, primaryControllerID: 0x20, isOnline: false, vfNumber: 0, queues: 0, interrupts: 0),
        ]))
        #expect(list.count == 4)
        #expect(list[0] == NVMeSecondaryController(controllerID: 1, primaryControllerID: 0, isOnline: true, vfNumber: 1, queues: 2, interrupts: 1))
        #expect(list[0].vfIndex == 0 && list[0].state == "online")
        #expect(list[1].state == "offline")
        #expect(list[2].controllerID == 0x21 && list[2].primaryControllerID == 0x20 && list[2].vfIndex == 3)
        #expect(list[2].queues == 3 && list[2].interrupts == 2)
        #expect(list[3].vfIndex == nil)
        #expect(try NVMeSecondaryController.parseList(nvmeSecondaryListBytes([])).isEmpty)
    }

    @Test func onlyBitZeroOfSCSMeansOnline() throws {
        var b = nvmeSecondaryListBytes([NVMeSecondaryController(controllerID: 1, primaryControllerID: 0, isOnline: false, vfNumber: 1, queues: 0, interrupts: 0)])
        b[32 + 4] = 0xfe
        #expect(try !NVMeSecondaryController.parseList(b)[0].isOnline)
        b[32 + 4] = 0x01
        #expect(try NVMeSecondaryController.parseList(b)[0].isOnline)
    }

    @Test func rejectsTruncatedOrImpossibleData() {
        #expect(throws: SRIOVError.self) { try NVMeSecondaryController.parseList([]) }
        var tooMany = [UInt8](repeating: 0, count: 4096)
        tooMany[0] = 200
        #expect(throws: SRIOVError.self) { try NVMeSecondaryController.parseList(tooMany) }
        var short = [UInt8](repeating: 0, count: 64)
        short[0] = 2
        #expect(throws: SRIOVError.self) { try NVMeSecondaryController.parseList(short) }
        #expect(throws: SRIOVError.self) { try NVMePrimaryControllerCapabilities(parsing: [UInt8](repeating: 0, count: 40)) }
        #expect(throws: SRIOVError.self) { try NVMeControllerIdentity(parsing: [UInt8](repeating: 0, count: 100)) }
    }
}
