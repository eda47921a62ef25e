/// The parts of the Identify Controller data structure (CNS 0x01) Passage uses.
public struct NVMeControllerIdentity: Sendable, Hashable {
    /// PCI vendor id (bytes 1:0).
    public var vendorID: UInt16
    /// PCI subsystem vendor id (bytes 3:2).
    public var subsystemVendorID: UInt16
    /// Serial number (bytes 23:4, ASCII).
    public var serialNumber: String
    /// Model number (bytes 63:24, ASCII).
    public var modelNumber: String
    /// Firmware revision (bytes 71:64, ASCII).
    public var firmwareRevision: String
    /// Controller id, CNTLID (bytes 79:78): the id Virtualization Management names the primary by.
    public var controllerID: UInt16
    /// Version, VER (bytes 83:80): major << 16 | minor << 8 | tertiary.
    public var version: UInt32
    /// Controller type, CNTRLTYPE (byte 111): 1 I/O, 2 discovery, 3 administrative; 0 before NVMe 1.4.
    public var controllerType: UInt8
    /// Optional Admin Command Support, OACS (bytes 257:256).
    public var optionalAdminCommands: UInt16

    /// OACS bit 7: the controller supports Virtualization Management.
    public var supportsVirtualizationManagement: Bool { optionalAdminCommands & 0x80 != 0 }

    /// `1.4.0`
    public var versionString: String { "\(version >> 16).\((version >> 8) & 0xff).\(version & 0xff)" }

    public init(vendorID: UInt16, subsystemVendorID: UInt16, serialNumber: String, modelNumber: String,
                firmwareRevision: String, controllerID: UInt16, version: UInt32, controllerType: UInt8,
                optionalAdminCommands: UInt16) {
        self.vendorID = vendorID
        self.subsystemVendorID = subsystemVendorID
        self.serialNumber = serialNumber
        self.modelNumber = modelNumber
        self.firmwareRevision = firmwareRevision
        self.controllerID = controllerID
        self.version = version
        self.controllerType = controllerType
        self.optionalAdminCommands = optionalAdminCommands
    }

    /// Parses the 4096-byte Identify Controller data. Throws when the buffer is too short to hold
    /// the fields above (the kernel always returns the full structure).
    public init(parsing data: [UInt8]) throws(SRIOVError) {
        guard data.count >= 258 else {
            throw SRIOVError(code: .nvme, message: "Identify Controller data is \(data.count) bytes; expected 4096")
        }
        let b = NVMeBytes(data)
        self.init(vendorID: b.u16(0), subsystemVendorID: b.u16(2), serialNumber: b.ascii(4, 20),
                  modelNumber: b.ascii(24, 40), firmwareRevision: b.ascii(64, 8), controllerID: b.u16(78),
                  version: b.u32(80), controllerType: b.u8(111), optionalAdminCommands: b.u16(256))
    }
}
