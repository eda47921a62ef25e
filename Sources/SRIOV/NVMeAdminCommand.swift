import HostPCI

/// One NVMe admin command as Passage sends it through `NVME_IOCTL_ADMIN_CMD`: the opcode, the
/// command dwords that matter, and how many bytes of data the controller returns.
///
/// The builders are the single place where command dwords are encoded, so unit tests can check
/// the exact `cdw10`/`cdw11` values that reach the controller.
public struct NVMeAdminCommand: Sendable, Hashable, CustomStringConvertible {
    /// Admin opcode (`0x06` Identify, `0x1C` Virtualization Management).
    public var opcode: UInt8
    public var namespaceID: UInt32 = 0
    public var cdw10: UInt32 = 0
    public var cdw11: UInt32 = 0
    public var cdw12: UInt32 = 0
    public var cdw13: UInt32 = 0
    public var cdw14: UInt32 = 0
    public var cdw15: UInt32 = 0
    /// Bytes the controller transfers to the host (4096 for Identify, 0 for Virtualization Management).
    public var dataLength: UInt32 = 0
    /// What the command does, in words, for errors and `--dry-run` (`Identify Primary Controller Capabilities`).
    public var name: String

    public init(opcode: UInt8, name: String, namespaceID: UInt32 = 0, cdw10: UInt32 = 0, cdw11: UInt32 = 0,
                dataLength: UInt32 = 0) {
        self.opcode = opcode
        self.name = name
        self.namespaceID = namespaceID
        self.cdw10 = cdw10
        self.cdw11 = cdw11
        self.dataLength = dataLength
    }

    public static let identifyOpcode: UInt8 = 0x06
    public static let virtualizationManagementOpcode: UInt8 = 0x1C
    /// Size of every Identify data structure.
    public static let identifyDataLength: UInt32 = 4096

    /// Identify data structures Passage reads (the CNS field, cdw10 bits 7:0).
    public enum IdentifyCNS: UInt8, Sendable {
        /// Identify Controller data structure.
        case controller = 0x01
        /// Primary Controller Capabilities data structure.
        case primaryControllerCapabilities = 0x14
        /// Secondary Controller List, starting at the controller id in CNTID.
        case secondaryControllerList = 0x15

        var title: String {
            switch self {
            case .controller: "Identify Controller"
            case .primaryControllerCapabilities: "Identify Primary Controller Capabilities"
            case .secondaryControllerList: "Identify Secondary Controller List"
            }
        }
    }

    /// Virtualization Management actions (cdw10 bits 3:0).
    public enum VirtualizationAction: UInt8, Sendable, CaseIterable {
        /// Primary Controller Flexible Allocation: how many flexible resources the primary keeps (takes effect on its next reset).
        case primaryFlexibleAllocation = 0x1
        /// Secondary Controller Offline.
        case secondaryOffline = 0x7
        /// Secondary Controller Assign: give flexible resources to an offline secondary controller.
        case secondaryAssign = 0x8
        /// Secondary Controller Online.
        case secondaryOnline = 0x9

        public var title: String {
            switch self {
            case .primaryFlexibleAllocation: "primary flexible allocation"
            case .secondaryOffline: "secondary offline"
            case .secondaryAssign: "secondary assign"
            case .secondaryOnline: "secondary online"
            }
        }
    }

    /// Controller resource types (cdw10 bits 10:8).
    public enum Resource: UInt8, Sendable, CaseIterable {
        /// VQ: virtual queue resources (a submission/completion queue pair; the admin queue counts as one).
        case queue = 0
        /// VI: virtual interrupt resources (MSI-X vectors).
        case interrupt = 1

        public var abbreviation: String { self == .queue ? "VQ" : "VI" }
    }

    /// Identify (opcode 0x06): cdw10 = CNS | CNTID << 16; 4096 bytes of data.
    public static func identify(_ cns: IdentifyCNS, controllerID: UInt16 = 0) -> NVMeAdminCommand {
        NVMeAdminCommand(opcode: identifyOpcode, name: cns.title,
                         cdw10: UInt32(cns.rawValue) | UInt32(controllerID) << 16,
                         dataLength: identifyDataLength)
    }

    /// Virtualization Management (opcode 0x1C): cdw10 = action | resource type << 8 | controller id << 16,
    /// cdw11 = number of resources (bits 15:0). Online and offline ignore the resource type and count.
    public static func virtualizationManagement(action: VirtualizationAction, resource: Resource = .queue,
                                                controllerID: UInt16, count: UInt16 = 0) -> NVMeAdminCommand {
        let name: String = switch action {
        case .primaryFlexibleAllocation:
            "Virtualization Management: primary flexible allocation \(resource.abbreviation)=\(count) on controller \(controllerID)"
        case .secondaryAssign:
            "Virtualization Management: secondary assign \(resource.abbreviation)=\(count) to controller \(controllerID)"
        case .secondaryOffline, .secondaryOnline:
            "Virtualization Management: \(action.title) of controller \(controllerID)"
        }
        let usesResource = action == .primaryFlexibleAllocation || action == .secondaryAssign
        return NVMeAdminCommand(
            opcode: virtualizationManagementOpcode, name: name,
            cdw10: UInt32(action.rawValue) | (usesResource ? UInt32(resource.rawValue) << 8 : 0) | UInt32(controllerID) << 16,
            cdw11: usesResource ? UInt32(count) : 0)
    }

    /// `Virtualization Management: secondary assign VQ=2 to controller 2 (opcode 0x1c cdw10=0x00020008 cdw11=0x00000002)`
    public var description: String {
        "\(name) (opcode 0x\(hex(opcode, 2)) cdw10=0x\(hex(cdw10, 8)) cdw11=0x\(hex(cdw11, 8)))"
    }

    /// The dry-run / log form of sending this command to `device`.
    public func hostAction(device: String) -> HostAction {
        .ioctl(device: device, request: "NVME_IOCTL_ADMIN_CMD", detail: description)
    }
}
