import CLinux
import HostPCI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An open NVMe controller character device (`/dev/nvmeN`) and the admin commands Passage sends
/// to it: Identify (controller, primary controller capabilities, secondary controller list) and
/// Virtualization Management. Owns the file descriptor and closes it in `deinit`.
///
/// Every command that completes with a non-zero status throws `SRIOVError(.nvme)` naming the
/// device, the command, the decoded status and the usual fix.
public final class NVMeController {
    /// The character device, `/dev/nvme0`.
    public let path: String
    private let fd: Int32
    private let transport: (any NVMeAdminTransport)?

    /// Opens the controller's character device read-write (the admin ioctl needs CAP_SYS_ADMIN).
    public init(path: String) throws(SRIOVError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            let fix = e == EACCES || e == EPERM ? ": NVMe admin commands need root (CAP_SYS_ADMIN)" : ""
            throw SRIOVError(code: .io, message: "cannot open NVMe controller \(path): \(String(cString: strerror(e)))\(fix)", errno: e)
        }
        self.path = path
        self.fd = fd
        self.transport = nil
    }

    /// A controller whose commands go to `transport` (a simulated controller in tests); no device is opened.
    public init(path: String, transport: any NVMeAdminTransport) {
        self.path = path
        self.fd = -1
        self.transport = transport
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Sends one admin command. Returns completion dword 0 and the data the controller returned.
    @discardableResult
    public func execute(_ command: NVMeAdminCommand) throws(SRIOVError) -> (result: UInt32, data: [UInt8]) {
        var data = [UInt8](repeating: 0, count: Int(command.dataLength))
        var result: UInt32 = 0
        let rc: Int32
        if let transport {
            rc = transport.submit(command, data: &data, result: &result)
        } else {
            rc = Self.ioctlSubmit(fd: fd, command, data: &data, result: &result)
        }
        if rc < 0 {
            let e = -rc
            var fix = ""
            switch e {
            case EACCES, EPERM: fix = "; NVMe admin commands need root (CAP_SYS_ADMIN)"
            case EINVAL: fix = "; the kernel rejected the command's layout"
            case ENOTTY: fix = "; \(path) is not an NVMe controller character device"
            case EBUSY, EAGAIN, ENODEV: fix = "; the controller is resetting or going away: wait until /sys/class/nvme/\(NVMeSysfs.lastComponent(path))/state is live and retry"
            default: break
            }
            throw SRIOVError(code: .nvme, message: "\(command.name) on \(path) failed: \(String(cString: strerror(e)))\(fix)", errno: e)
        }
        let status = NVMeStatus(raw: UInt16(truncatingIfNeeded: rc))
        guard status.isSuccess else {
            throw SRIOVError(code: .nvme, message: "\(command.description) on \(path) failed with NVMe status \(status)"
                + (status.fix.map { ": \($0)" } ?? ""))
        }
        return (result, data)
    }

    /// Identify Controller (CNS 0x01).
    public func identifyController() throws(SRIOVError) -> NVMeControllerIdentity {
        try NVMeControllerIdentity(parsing: execute(.identify(.controller)).data)
    }

    /// Identify Primary Controller Capabilities (CNS 0x14) of the controller `controllerID` (this
    /// controller's own id, from `identifyController()`).
    public func primaryControllerCapabilities(controllerID: UInt16 = 0) throws(SRIOVError) -> NVMePrimaryControllerCapabilities {
        try NVMePrimaryControllerCapabilities(parsing: execute(.identify(.primaryControllerCapabilities, controllerID: controllerID)).data)
    }

    /// Identify Secondary Controller List (CNS 0x15) from controller id `startingAt` (0: all).
    public func secondaryControllers(startingAt: UInt16 = 0) throws(SRIOVError) -> [NVMeSecondaryController] {
        try NVMeSecondaryController.parseList(execute(.identify(.secondaryControllerList, controllerID: startingAt)).data)
    }

    /// Virtualization Management (opcode 0x1C). Returns completion dword 0 (for assignments, the
    /// number of resources now assigned or allocated).
    @discardableResult
    public func virtualizationManagement(action: NVMeAdminCommand.VirtualizationAction,
                                         resource: NVMeAdminCommand.Resource = .queue,
                                         controllerID: UInt16, count: UInt16 = 0) throws(SRIOVError) -> UInt32 {
        try execute(.virtualizationManagement(action: action, resource: resource, controllerID: controllerID, count: count)).result
    }

    /// The one place the ioctl is made: fills `struct nvme_admin_cmd`, points it at `data`, and
    /// returns `passage_nvme_admin`'s -errno or NVMe status.
    private static func ioctlSubmit(fd: Int32, _ command: NVMeAdminCommand, data: inout [UInt8], result: inout UInt32) -> Int32 {
        var cmd = nvme_passthru_cmd()  // struct nvme_admin_cmd is a #define of it
        cmd.opcode = command.opcode
        cmd.nsid = command.namespaceID
        cmd.cdw10 = command.cdw10
        cmd.cdw11 = command.cdw11
        cmd.cdw12 = command.cdw12
        cmd.cdw13 = command.cdw13
        cmd.cdw14 = command.cdw14
        cmd.cdw15 = command.cdw15
        let rc: Int32 = data.withUnsafeMutableBytes { buf in
            cmd.addr = buf.baseAddress.map { UInt64(UInt(bitPattern: $0)) } ?? 0
            cmd.data_len = UInt32(buf.count)
            return passage_nvme_admin(fd, &cmd)
        }
        result = cmd.result
        return rc
    }
}
