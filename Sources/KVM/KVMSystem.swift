import CLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The KVM system file descriptor (`/dev/kvm`): API version, capabilities, supported CPUID,
/// and the factory of virtual machines. Closed on deinit or by `close()`.
public final class KVMSystem: @unchecked Sendable {
    /// The only KVM API version there has ever been.
    public static let apiVersion = 12

    public let path: String
    private(set) var fd: Int32
    /// Size of the `kvm_run` area each vCPU maps (`KVM_GET_VCPU_MMAP_SIZE`).
    public let vcpuMmapSize: Int

    /// Opens `path` (normally `/dev/kvm`) and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            switch e {
            case ENOENT, ENODEV, ENXIO:
                throw KVMError(.deviceMissing, "\(path) does not exist: load the KVM module (modprobe kvm-intel or kvm-amd) on a machine with hardware virtualization enabled", errno: e)
            case EACCES, EPERM:
                throw KVMError(.permissionDenied, "\(path): permission denied: run as root or add the user to the group that owns \(path) (usually kvm)", errno: e)
            default:
                throw KVMError.call("open \(path)", errno: e)
            }
        }
        self.fd = fd
        let version: Int
        do { version = try KVMSyscall.ioctl(fd, passage_KVM_GET_API_VERSION, "KVM_GET_API_VERSION", value: 0) } catch {
            Glibc.close(fd); throw error
        }
        guard version == Self.apiVersion else {
            Glibc.close(fd)
            throw KVMError(.apiVersion, "\(path) speaks KVM API version \(version), this program needs \(Self.apiVersion)")
        }
        do { vcpuMmapSize = try KVMSyscall.ioctl(fd, passage_KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0) } catch {
            Glibc.close(fd); throw error
        }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Closes the descriptor now; later calls throw `.closed`. VMs created from it stay usable.
    public func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    /// `KVM_CHECK_EXTENSION`: 0 when absent, otherwise the capability's value (often 1).
    public func check(_ capability: KVMCapability) -> Int {
        (try? KVMSyscall.ioctl(fd, passage_KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", value: UInt(capability.rawValue))) ?? 0
    }

    /// Throws `.capabilityMissing` naming every absent capability.
    public func require(_ capabilities: [KVMCapability]) throws(KVMError) {
        guard fd >= 0 else { throw KVMError(.closed, "\(path) was closed already") }
        let missing = capabilities.filter { check($0) == 0 }
        if !missing.isEmpty {
            throw KVMError(.capabilityMissing, "\(path) lacks \(missing.map(\.name).joined(separator: ", ")): this kernel's KVM is too old or was built without it")
        }
    }

    /// `KVM_CREATE_VM` (type 0, the default x86 VM).
    public func createVM() throws(KVMError) -> KVMVirtualMachine {
        let vmfd = try KVMSyscall.ioctl(fd, passage_KVM_CREATE_VM, "KVM_CREATE_VM", value: 0)
        return KVMVirtualMachine(fd: Int32(vmfd), vcpuMmapSize: vcpuMmapSize)
    }

    /// `KVM_GET_SUPPORTED_CPUID`: every leaf KVM can expose, with what it can expose in it.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var n: UInt32 = 128
        while true {
            guard let c = passage_kvm_cpuid2_alloc(n) else { throw KVMError.call("KVM_GET_SUPPORTED_CPUID", errno: ENOMEM) }
            defer { free(c) }
            do {
                _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", UnsafeMutableRawPointer(c))
            } catch {
                if error.errno == E2BIG && n < 4096 { n *= 2; continue }
                throw error
            }
            let entries = passage_kvm_cpuid2_entries(c)!
            return (0..<Int(c.pointee.nent)).map { CPUIDEntry(entries[$0]) }
        }
    }

    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM saves and restores.
    public func msrIndexList() throws(KVMError) -> [UInt32] {
        var n: UInt32 = 256
        while true {
            guard let l = passage_kvm_msr_list_alloc(n) else { throw KVMError.call("KVM_GET_MSR_INDEX_LIST", errno: ENOMEM) }
            defer { free(l) }
            do {
                _ = try KVMSyscall.ioctl(fd, passage_KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST", UnsafeMutableRawPointer(l))
            } catch {
                if error.errno == E2BIG && n < 65536 { n = max(n * 2, l.pointee.nmsrs); continue }
                throw error
            }
            let idx = passage_kvm_msr_list_indices(l)!
            return (0..<Int(l.pointee.nmsrs)).map { idx[$0] }
        }
    }
}
