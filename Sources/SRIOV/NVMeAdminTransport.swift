/// What carries admin commands to a controller: the kernel (`NVME_IOCTL_ADMIN_CMD` on `/dev/nvmeN`,
/// inside `NVMeController`) or, in tests, a simulated controller.
public protocol NVMeAdminTransport: AnyObject {
    /// Sends `command`. For a command that transfers data, `data` holds `command.dataLength` zero
    /// bytes on entry and the controller's data on return.
    ///
    /// Returns a negative errno when the command could not be sent, otherwise the completion's
    /// status field (0 on success), with `result` set to completion dword 0.
    func submit(_ command: NVMeAdminCommand, data: inout [UInt8], result: inout UInt32) -> Int32
}
