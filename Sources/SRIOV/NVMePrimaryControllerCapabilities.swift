/// The Primary Controller Capabilities data structure (Identify CNS 0x14, NVMe base spec 2.0):
/// how many flexible queue (VQ) and interrupt (VI) resources the primary controller has, how many
/// it keeps for itself, and how many its secondary controllers hold.
///
/// Flexible resources are shared: total = allocated to the primary + assigned to secondaries + free.
public struct NVMePrimaryControllerCapabilities: Sendable, Hashable {
    /// CNTLID (bytes 1:0): the primary controller's id.
    public var controllerID: UInt16
    /// PORTID (bytes 3:2).
    public var portID: UInt16
    /// CRT (byte 4), Controller Resource Types: bit 0 VQ supported, bit 1 VI supported.
    public var resourceTypes: UInt8

    /// VQFRT (bytes 35:32): VQ flexible resources in total.
    public var vqFlexibleTotal: UInt32
    /// VQRFA (bytes 39:36): VQ flexible resources assigned to secondary controllers.
    public var vqFlexibleAssigned: UInt32
    /// VQRFAP (bytes 41:40): VQ flexible resources allocated to the primary (current value; a new
    /// allocation takes effect at the primary's next reset).
    public var vqFlexibleAllocatedToPrimary: UInt16
    /// VQPRT (bytes 43:42): VQ private resources of the primary.
    public var vqPrivateTotal: UInt16
    /// VQFRSM (bytes 45:44): the most VQ flexible resources one secondary controller may hold.
    public var vqFlexibleSecondaryMaximum: UInt16
    /// VQGRAN (bytes 47:46): preferred granularity of VQ assignments.
    public var vqGranularity: UInt16

    /// VIFRT (bytes 67:64): VI flexible resources in total.
    public var viFlexibleTotal: UInt32
    /// VIRFA (bytes 71:68): VI flexible resources assigned to secondary controllers.
    public var viFlexibleAssigned: UInt32
    /// VIRFAP (bytes 73:72): VI flexible resources allocated to the primary.
    public var viFlexibleAllocatedToPrimary: UInt16
    /// VIPRT (bytes 75:74): VI private resources of the primary.
    public var viPrivateTotal: UInt16
    /// VIFRSM (bytes 77:76): the most VI flexible resources one secondary controller may hold.
    public var viFlexibleSecondaryMaximum: UInt16
    /// VIGRAN (bytes 79:78): preferred granularity of VI assignments.
    public var viGranularity: UInt16

    public init(controllerID: UInt16, portID: UInt16 = 0, resourceTypes: UInt8,
                vqFlexibleTotal: UInt32, vqFlexibleAssigned: UInt32, vqFlexibleAllocatedToPrimary: UInt16,
                vqPrivateTotal: UInt16, vqFlexibleSecondaryMaximum: UInt16, vqGranularity: UInt16,
                viFlexibleTotal: UInt32, viFlexibleAssigned: UInt32, viFlexibleAllocatedToPrimary: UInt16,
                viPrivateTotal: UInt16, viFlexibleSecondaryMaximum: UInt16, viGranularity: UInt16) {
        self.controllerID = controllerID
        self.portID = portID
        self.resourceTypes = resourceTypes
        self.vqFlexibleTotal = vqFlexibleTotal
        self.vqFlexibleAssigned = vqFlexibleAssigned
        self.vqFlexibleAllocatedToPrimary = vqFlexibleAllocatedToPrimary
        self.vqPrivateTotal = vqPrivateTotal
        self.vqFlexibleSecondaryMaximum = vqFlexibleSecondaryMaximum
        self.vqGranularity = vqGranularity
        self.viFlexibleTotal = viFlexibleTotal
        self.viFlexibleAssigned = viFlexibleAssigned
        self.viFlexibleAllocatedToPrimary = viFlexibleAllocatedToPrimary
        self.viPrivateTotal = viPrivateTotal
        self.viFlexibleSecondaryMaximum = viFlexibleSecondaryMaximum
        self.viGranularity = viGranularity
    }

    /// Parses the 4096-byte structure (only the first 80 bytes carry fields).
    public init(parsing data: [UInt8]) throws(SRIOVError) {
        guard data.count >= 80 else {
            throw SRIOVError(code: .nvme, message: "Primary Controller Capabilities data is \(data.count) bytes; expected 4096")
        }
        let b = NVMeBytes(data)
        self.init(controllerID: b.u16(0), portID: b.u16(2), resourceTypes: b.u8(4),
                  vqFlexibleTotal: b.u32(32), vqFlexibleAssigned: b.u32(36), vqFlexibleAllocatedToPrimary: b.u16(40),
                  vqPrivateTotal: b.u16(42), vqFlexibleSecondaryMaximum: b.u16(44), vqGranularity: b.u16(46),
                  viFlexibleTotal: b.u32(64), viFlexibleAssigned: b.u32(68), viFlexibleAllocatedToPrimary: b.u16(72),
                  viPrivateTotal: b.u16(74), viFlexibleSecondaryMaximum: b.u16(76), viGranularity: b.u16(78))
    }

    /// CRT bit 0 / bit 1: the controller has flexible resources of this type.
    public func supports(_ resource: NVMeAdminCommand.Resource) -> Bool {
        resourceTypes & (resource == .queue ? 0x1 : 0x2) != 0
    }

    public func flexibleTotal(_ r: NVMeAdminCommand.Resource) -> Int {
        Int(r == .queue ? vqFlexibleTotal : viFlexibleTotal)
    }

    public func assignedToSecondaries(_ r: NVMeAdminCommand.Resource) -> Int {
        Int(r == .queue ? vqFlexibleAssigned : viFlexibleAssigned)
    }

    public func allocatedToPrimary(_ r: NVMeAdminCommand.Resource) -> Int {
        Int(r == .queue ? vqFlexibleAllocatedToPrimary : viFlexibleAllocatedToPrimary)
    }

    public func secondaryMaximum(_ r: NVMeAdminCommand.Resource) -> Int {
        Int(r == .queue ? vqFlexibleSecondaryMaximum : viFlexibleSecondaryMaximum)
    }

    public func granularity(_ r: NVMeAdminCommand.Resource) -> Int {
        Int(r == .queue ? vqGranularity : viGranularity)
    }

    /// Flexible resources neither the primary nor any secondary holds.
    public func free(_ r: NVMeAdminCommand.Resource) -> Int {
        max(0, flexibleTotal(r) - allocatedToPrimary(r) - assignedToSecondaries(r))
    }
}
