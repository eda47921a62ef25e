/// One change Passage makes to the host, as `--dry-run` prints it and as operations log it.
public enum HostAction: Sendable, Hashable, CustomStringConvertible {
    /// Write `value` to a sysfs attribute.
    case write(path: String, value: String)
    /// An ioctl on a device node: the request's name and its arguments in words.
    case ioctl(device: String, request: String, detail: String)
    /// A netlink request: what it sets, on which interface.
    case netlink(interface: String, detail: String)
    /// Wait for the kernel to finish something (new VF links, a driver to bind).
    case wait(String)

    public var description: String {
        switch self {
        case let .write(path, value): "write \(value.debugDescription) > \(path)"
        case let .ioctl(device, request, detail): "ioctl \(request) on \(device): \(detail)"
        case let .netlink(interface, detail): "netlink \(interface): \(detail)"
        case let .wait(what): "wait for \(what)"
        }
    }
}
