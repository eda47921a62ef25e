import HostPCI

/// One secondary controller of an NVMe primary: the controller behind an SR-IOV VF.
/// Parsed from a Secondary Controller Entry (Identify CNS 0x15); `vfAddress` is filled in from
/// the PF's `virtfnN` links when the VF exists.
public struct NVMeSecondaryController: Sendable, Hashable {
    /// SCID (bytes 1:0): the secondary controller's id, which Virtualization Management names it by.
    public var controllerID: UInt16
    /// PCID (bytes 3:2): its primary controller's id.
    public var primaryControllerID: UInt16
    /// SCS bit 0 (byte 4): online.
    public var isOnline: Bool
    /// VFN (bytes 9:8): the VF number, 1-based (VF index + 1); 0 when not associated with a VF.
    public var vfNumber: UInt16
    /// NVQ (bytes 11:10): VQ flexible resources assigned.
    public var queues: UInt16
    /// NVI (bytes 13:12): VI flexible resources assigned.
    public var interrupts: UInt16
    /// The VF's PCI address, when the VF exists (`virtfn(VFN-1)` of the PF).
    public var vfAddress: PCIAddress?

    public init(controllerID: UInt16, primaryControllerID: UInt16, isOnline: Bool, vfNumber: UInt16,
                queues: UInt16, interrupts: UInt16, vfAddress: PCIAddress? = nil) {
        self.controllerID = controllerID
        self.primaryControllerID = primaryControllerID
        self.isOnline = isOnline
        self.vfNumber = vfNumber
        self.queues = queues
        self.interrupts = interrupts
        self.vfAddress = vfAddress
    }

    /// The 0-based VF index (`virtfnN`, `sriov_numvfs` order), or nil when VFN is 0.
    public var vfIndex: Int? { vfNumber > 0 ? Int(vfNumber) - 1 : nil }

    /// `online` or `offline`.
    public var state: String { isOnline ? "online" : "offline" }

    /// Size of one Secondary Controller Entry.
    public static let entrySize = 32
    /// Offset of the first entry in the Secondary Controller List (byte 0 is the count).
    public static let firstEntryOffset = 32
    /// The most entries one list holds.
    public static let maximumEntries = 127

    /// Parses a Secondary Controller List (Identify CNS 0x15): byte 0 is the number of identifiers,
    /// then 32-byte entries from byte 32.
    public static func parseList(_ data: [UInt8]) throws(SRIOVError) -> [NVMeSecondaryController] {
        guard !data.isEmpty else {
            throw SRIOVError(code: .nvme, message: "Secondary Controller List data is empty; expected 4096 bytes")
        }
        let count = Int(data[0])
        guard count <= maximumEntries else {
            throw SRIOVError(code: .nvme, message: "Secondary Controller List claims \(count) entries; at most \(maximumEntries) fit")
        }
        guard data.count >= firstEntryOffset + count * entrySize else {
            throw SRIOVError(code: .nvme, message: "Secondary Controller List claims \(count) entries but has only \(data.count) bytes")
        }
        let b = NVMeBytes(data)
        return (0..<count).map { i in
            let o = firstEntryOffset + i * entrySize
            return NVMeSecondaryController(controllerID: b.u16(o), primaryControllerID: b.u16(o + 2),
                                           isOnline: b.u8(o + 4) & 1 != 0, vfNumber: b.u16(o + 8),
                                           queues: b.u16(o + 10), interrupts: b.u16(o + 12))
        }
    }
}
