/// Errors from reading (and, later, changing) the host's PCI devices.
/// `message` names the device or path and, where there is one, the fix.
public struct HostPCIError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidAddress = "invalid-address"
        case deviceNotFound = "device-not-found"
        case sysfsUnavailable = "sysfs-unavailable"
        case io = "io-error"
        case invalidArgument = "invalid-argument"
        case driverNotFound = "driver-not-found"
        case bindFailed = "bind-failed"
        /// The IOMMU group has members that are not safe to leave with the host.
        case groupNotViable = "group-not-viable"
        /// The device carries something the host is using (a mounted file system, an interface with addresses).
        case deviceInUse = "device-in-use"
    }

    public let code: Code
    public let message: String
    /// The underlying errno, if a system call failed.
    public let errno: Int32?

    public init(code: Code, message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { message }

    static func invalidAddress(_ input: String, reason: String) -> HostPCIError {
        HostPCIError(
            code: .invalidAddress,
            message: "invalid PCI address \(quoted(input)): \(reason); expected DDDD:BB:DD.F such as 0000:3b:00.1 (or BB:DD.F for domain 0)")
    }

    static func deviceNotFound(_ address: PCIAddress, root: SysfsRoot) -> HostPCIError {
        HostPCIError(
            code: .deviceNotFound,
            message: "no PCI device \(address) under \(root.pciDevicesPath); run `passage devices` to list the devices present")
    }

    /// Quotes user input for an error message, escaping control characters so a NUL or a newline
    /// cannot corrupt the terminal or a log line.
    static func quoted(_ input: String) -> String {
        var out = "\""
        for scalar in input.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                out += "\\u{\(hex(scalar.value, 2))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
