import CLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An owned `eventfd(2)`: the doorbell of irqfd (user space → guest interrupt) and ioeventfd
/// (guest write → user space). Closed on deinit.
public final class EventFD: @unchecked Sendable {
    public let fd: Int32

    /// Creates a non-blocking, close-on-exec eventfd with counter 0.
    public init(semaphore: Bool = false) throws(KVMError) {
        var flags = Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)
        if semaphore { flags |= Int32(EFD_SEMAPHORE) }
        let fd = eventfd(0, flags)
        guard fd >= 0 else { throw KVMError.call("eventfd", errno: errno) }
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    /// Adds `value` to the counter (for irqfd: raises the interrupt).
    public func signal(_ value: UInt64 = 1) throws(KVMError) {
        var v = value
        while true {
            let r = write(fd, &v, 8)
            if r == 8 { return }
            if r < 0 && errno == EINTR { continue }
            throw KVMError.call("eventfd write", errno: r < 0 ? errno : EIO)
        }
    }

    /// Reads and resets the counter; nil when it is 0.
    public func consume() -> UInt64? {
        var v: UInt64 = 0
        while true {
            let r = read(fd, &v, 8)
            if r == 8 { return v }
            if r < 0 && errno == EINTR { continue }
            return nil
        }
    }
}
