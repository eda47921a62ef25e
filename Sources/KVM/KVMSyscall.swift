import CLinux

/// The one place the KVM layer calls `ioctl`: errno is read by the C shim at once and
/// turned into a `KVMError` that names the request.
@usableFromInline
enum KVMSyscall {
    /// An ioctl with a pointer argument. Returns the non-negative result.
    @inlinable
    static func ioctl(_ fd: Int32, _ request: UInt, _ name: StaticString, _ arg: UnsafeMutableRawPointer?) throws(KVMError) -> Int {
        guard fd >= 0 else { throw KVMError(.closed, "\(name): the file descriptor was closed already") }
        let r = passage_kvm_ioctl(fd, request, arg)
        if r < 0 { throw KVMError.call("\(name)", errno: Int32(-r)) }
        return r
    }

    /// An ioctl with an integer argument.
    @inlinable
    static func ioctl(_ fd: Int32, _ request: UInt, _ name: StaticString, value: UInt) throws(KVMError) -> Int {
        guard fd >= 0 else { throw KVMError(.closed, "\(name): the file descriptor was closed already") }
        let r = passage_kvm_ioctl_int(fd, request, value)
        if r < 0 { throw KVMError.call("\(name)", errno: Int32(-r)) }
        return r
    }

    /// An ioctl with a struct passed by pointer.
    @inlinable
    static func ioctl<T>(_ fd: Int32, _ request: UInt, _ name: StaticString, _ value: inout T) throws(KVMError) -> Int {
        guard fd >= 0 else { throw KVMError(.closed, "\(name): the file descriptor was closed already") }
        let r = withUnsafeMutablePointer(to: &value) { passage_kvm_ioctl(fd, request, UnsafeMutableRawPointer($0)) }
        if r < 0 { throw KVMError.call("\(name)", errno: Int32(-r)) }
        return r
    }
}
