/// The status field of an NVMe completion, as the kernel's admin ioctl returns it:
/// SC in bits 7:0, SCT in bits 10:8, CRD in 12:11, More in 13, DNR (do not retry) in 14.
public struct NVMeStatus: Sendable, Hashable, CustomStringConvertible {
    public let raw: UInt16

    public init(raw: UInt16) { self.raw = raw }

    /// Status Code Type: 0 generic, 1 command specific, 2 media and data integrity, 3 path related.
    public var codeType: UInt8 { UInt8((raw >> 8) & 0x7) }
    /// Status Code within its type.
    public var code: UInt8 { UInt8(raw & 0xff) }
    /// SCT and SC together, as the spec writes them (`0x0120` Invalid Secondary Controller State).
    public var typeAndCode: UInt16 { raw & 0x7ff }
    public var doNotRetry: Bool { raw & 0x4000 != 0 }
    public var isSuccess: Bool { typeAndCode == 0 }

    // The codes Passage meets when provisioning secondary controllers.
    public static let invalidOpcode: UInt16 = 0x0001
    public static let invalidField: UInt16 = 0x0002
    public static let internalError: UInt16 = 0x0006
    public static let commandSequenceError: UInt16 = 0x000C
    public static let invalidControllerIdentifier: UInt16 = 0x011F
    public static let invalidSecondaryControllerState: UInt16 = 0x0120
    public static let invalidNumberOfControllerResources: UInt16 = 0x0121
    public static let invalidResourceIdentifier: UInt16 = 0x0122

    /// The spec's name for the status, or its type and number when Passage does not know it.
    public var name: String {
        switch typeAndCode {
        case 0x0000: "Successful Completion"
        case Self.invalidOpcode: "Invalid Command Opcode"
        case Self.invalidField: "Invalid Field in Command"
        case 0x0004: "Data Transfer Error"
        case Self.internalError: "Internal Error"
        case 0x0007: "Command Abort Requested"
        case 0x000B: "Invalid Namespace or Format"
        case Self.commandSequenceError: "Command Sequence Error"
        case Self.invalidControllerIdentifier: "Invalid Controller Identifier"
        case Self.invalidSecondaryControllerState: "Invalid Secondary Controller State"
        case Self.invalidNumberOfControllerResources: "Invalid Number of Controller Resources"
        case Self.invalidResourceIdentifier: "Invalid Resource Identifier"
        default:
            switch codeType {
            case 0: "generic status 0x\(hexByte(code))"
            case 1: "command specific status 0x\(hexByte(code))"
            case 2: "media or data integrity error 0x\(hexByte(code))"
            case 3: "path related status 0x\(hexByte(code))"
            default: "status type \(codeType) code 0x\(hexByte(code))"
            }
        }
    }

    /// What usually causes this status for Passage's commands, and what to do about it; nil when there is nothing specific to say.
    public var fix: String? {
        switch typeAndCode {
        case Self.invalidOpcode:
            "the controller does not implement the command: Virtualization Management needs an SR-IOV NVMe controller that supports it (Identify Controller OACS bit 7)"
        case Self.invalidField:
            "the controller rejected a field: the action or resource type may be unsupported (see CRT in `passage nvme status`)"
        case Self.invalidControllerIdentifier:
            "no such controller on this PF: list the secondary controllers with `passage nvme status PF`"
        case Self.invalidSecondaryControllerState:
            "resources can only be assigned to an offline secondary controller, and it can only go online with VQ >= 2 and VI >= 1 while its VF exists (sriov_numvfs covers it)"
        case Self.invalidNumberOfControllerResources:
            "the count exceeds what one controller may hold (VQFRSM/VIFRSM) or the flexible total: ask for fewer (see `passage nvme status PF`)"
        case Self.invalidResourceIdentifier:
            "not enough free flexible resources: take them from the primary (`passage nvme prepare PF`, which resets the PF) or from other secondaries (offline them)"
        default:
            nil
        }
    }

    /// `0x4120 Invalid Secondary Controller State (SCT 1, SC 0x20, do not retry)`
    public var description: String {
        "0x\(hexWord(raw)) \(name) (SCT \(codeType), SC 0x\(hexByte(code))\(doNotRetry ? ", do not retry" : ""))"
    }
}

private func hexByte(_ v: UInt8) -> String {
    let s = String(v, radix: 16)
    return s.count < 2 ? "0" + s : s
}

private func hexWord(_ v: UInt16) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 4 - s.count)) + s
}
