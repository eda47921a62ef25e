// (Conditional so that the fuzz harnesses can compile the parsers with this file alone.)
#if canImport(KVM)
import KVM
#endif
#if canImport(VFIO)
import VFIO
#endif

/// The one error type of the VMM: what failed, in words that name the thing and the fix.
public struct VMMError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// The kernel image is not a bzImage this VMM can boot.
        case badKernel = "bad-kernel"
        /// The initramfs is missing or unreadable.
        case badInitramfs = "bad-initramfs"
        /// The guest does not fit in the memory asked for.
        case notEnoughMemory = "not-enough-memory"
        /// A configuration value is out of range or malformed.
        case badConfiguration = "bad-configuration"
        /// A file could not be read or written.
        case io
        /// The KVM layer failed (the message is KVM's).
        case kvm
        /// A device to pass through could not be opened or set up (VFIO, IOMMU group, BARs).
        case passthrough
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

#if canImport(KVM)
    public init(_ error: KVMError) {
        self.code = .kvm
        self.message = error.message
    }
#endif

#if canImport(VFIO)
    public init(_ error: VFIOError) {
        self.code = .passthrough
        self.message = error.message
    }
#endif

    public var description: String { message }
}
