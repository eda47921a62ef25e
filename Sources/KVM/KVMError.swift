#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one error type of the KVM layer: what failed, in words that name the thing and the fix,
/// with the `errno` that caused it when a system call failed.
public struct KVMError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure this is, for code that reacts to it.
    public enum Code: String, Sendable, Equatable {
        /// `/dev/kvm` does not exist (no KVM module loaded, or no hardware virtualization).
        case deviceMissing = "device-missing"
        /// `/dev/kvm` exists but this process may not open it.
        case permissionDenied = "permission-denied"
        /// The kernel speaks a KVM API other than version 12.
        case apiVersion = "api-version"
        /// A capability this program needs is absent.
        case capabilityMissing = "capability-missing"
        /// A memory slot is out of range, misaligned, or overlaps another one.
        case invalidMemoryRegion = "invalid-memory-region"
        /// The file descriptor was closed already.
        case closed
        /// Any other failed ioctl, mmap or system call.
        case systemCall = "system-call"
        /// A caller passed something the layer refuses before asking the kernel.
        case invalidArgument = "invalid-argument"
    }

    public let code: Code
    public let message: String
    /// The `errno` value, when a system call failed.
    public let errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    /// A failed call, named, with its `errno` spelled out (`KVM_CREATE_VCPU: Invalid argument (EINVAL)`).
    public static func call(_ name: String, errno e: Int32, _ hint: String = "") -> KVMError {
        let text = "\(name): \(errnoText(e))" + (hint.isEmpty ? "" : ": " + hint)
        return KVMError(.systemCall, text, errno: e)
    }

    public var description: String { message }
}

/// `Invalid argument (EINVAL)`.
func errnoText(_ e: Int32) -> String {
    let name: String
    switch e {
    case EPERM: name = "EPERM"
    case ENOENT: name = "ENOENT"
    case EINTR: name = "EINTR"
    case EIO: name = "EIO"
    case EBADF: name = "EBADF"
    case EAGAIN: name = "EAGAIN"
    case ENOMEM: name = "ENOMEM"
    case EACCES: name = "EACCES"
    case EFAULT: name = "EFAULT"
    case EBUSY: name = "EBUSY"
    case EEXIST: name = "EEXIST"
    case ENODEV: name = "ENODEV"
    case EINVAL: name = "EINVAL"
    case ENOSPC: name = "ENOSPC"
    case E2BIG: name = "E2BIG"
    case ENOTTY: name = "ENOTTY"
    case ENXIO: name = "ENXIO"
    case EOPNOTSUPP: name = "EOPNOTSUPP"
    default: name = "errno \(e)"
    }
    return String(cString: strerror(e)) + " (\(name))"
}
