/// How a VM ended.
public enum MachineExit: Sendable, Equatable, CustomStringConvertible {
    /// The guest powered off (`KVM_SYSTEM_EVENT_SHUTDOWN`).
    case poweroff
    /// The guest reset the machine (i8042 reset, `reboot=k`; or a system reset event). Without a
    /// firmware to restart, passage-vmm treats it as the end of the guest, as Firecracker does.
    case reset
    /// The host asked the VMM to stop (SIGINT, SIGTERM, the console's Ctrl-A x).
    case stopped(String)
    /// The guest crashed: triple fault, a crash event, an entry failure or a KVM internal error.
    case crashed(String)
    /// The VMM could not go on (its sandbox could not be installed, …).
    case failed(String)

    public var description: String {
        switch self {
        case .poweroff: "the guest powered off"
        case .reset: "the guest reset the machine"
        case .stopped(let why): "stopped: \(why)"
        case .crashed(let why): "the guest crashed: \(why)"
        case .failed(let why): "the VMM failed: \(why)"
        }
    }

    /// The process exit status passage-vmm uses: 0 poweroff/reset, 3 crash, 130 stopped, 1 a VMM failure.
    public var exitStatus: Int32 {
        switch self {
        case .poweroff, .reset: 0
        case .stopped: 130
        case .crashed: 3
        case .failed: 1
        }
    }
}
