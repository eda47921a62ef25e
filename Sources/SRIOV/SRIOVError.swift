import HostPCI

/// Errors from SR-IOV operations: VF lifecycle, NVMe provisioning, VF link settings.
/// `message` names the device and, where there is one, the fix.
public struct SRIOVError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case notSRIOV = "not-sriov"
        case tooManyVFs = "too-many-vfs"
        case vfsInUse = "vfs-in-use"
        case noResources = "no-resources"
        case timeout = "timeout"
        case nvme = "nvme-error"
        case netlink = "netlink-error"
        case noNetDevice = "no-net-device"
        case invalidArgument = "invalid-argument"
        case notFound = "device-not-found"
        case io = "io-error"
        /// A PF (or interface) with no VFs, asked to set a VF's link settings.
        case noVFs = "no-vfs"
        /// The driver refused an operation it does not implement (EOPNOTSUPP).
        case notSupported = "not-supported"
        /// The kernel accepted a change but reading it back shows something else.
        case readbackMismatch = "readback-mismatch"
    }

    public let code: Code
    public let message: String
    public let errno: Int32?

    public init(code: Code, message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { message }
}
