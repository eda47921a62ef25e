import CLinux
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// passage-vmm's sandbox: once a thread is set up it installs a seccomp filter of its own kind
/// (no_new_privs first); any system call outside its list kills the whole VMM (SIGSYS), and so
/// does any call through a foreign ABI (i386 `int 0x80`, x32). Nothing is opened, connected,
/// executed or forked after set-up, so `openat`, `socket`, `execve`, `clone`… are on no vCPU list.
public enum VMMSeccomp {
    public enum ThreadKind: String, Sendable, CaseIterable {
        /// Runs guest code: KVM_RUN and device emulation (port/MMIO/config), MSI-X set-up
        /// (eventfds, GSI routes, irqfds, VFIO SET_IRQS), BAR remaps, console output.
        case vcpu
        /// Waits for signals, joins the vCPUs, prints the end (and `--stats`, which reads /proc).
        case main
        /// Reads the terminal and feeds the UART.
        case console
    }

    /// Memory, locks, signals, time and exiting: what the Swift runtime and glibc need on every thread.
    static let common: [Int] = [
        SYS_read, SYS_write, SYS_pread64, SYS_pwrite64, SYS_close,
        SYS_futex, SYS_rt_sigreturn, SYS_rt_sigprocmask, SYS_restart_syscall,
        SYS_mmap, SYS_munmap, SYS_mremap, SYS_madvise, SYS_brk, SYS_mprotect,
        SYS_exit, SYS_exit_group, SYS_getpid, SYS_gettid, SYS_tgkill, SYS_sched_yield,
        SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime, SYS_gettimeofday,
        SYS_poll, SYS_ppoll, SYS_getrandom,
    ].map { Int($0) }

    /// The system calls a thread of `kind` may make, ioctl aside (see `ioctlSet`).
    public static func allowed(_ kind: ThreadKind) -> [Int32] {
        var list = common
        switch kind {
        case .vcpu: list += [Int(SYS_eventfd2)]
        case .main: list += [Int(SYS_rt_sigtimedwait), Int(SYS_openat), Int(SYS_mincore), Int(SYS_fstat), Int(SYS_newfstatat), Int(SYS_lseek)]
        case .console: break
        }
        return list.map { Int32($0) }
    }

    /// The ioctl requests a thread of `kind` may make: a vCPU's five (KVM_RUN and what the guest's
    /// interrupt and BAR programming needs), the terminal's for the others (raw mode and its
    /// restore; TIOCSTI, which types into the terminal, is not among them). Anything else —
    /// VFIO DMA mapping, group and container calls, KVM's set-up calls — is refused like a
    /// forbidden system call.
    public static func ioctlSet(_ kind: ThreadKind) -> Int32 {
        kind == .vcpu ? Int32(PASSAGE_SECCOMP_IOCTLS_VCPU) : Int32(PASSAGE_SECCOMP_IOCTLS_TERMINAL)
    }

    /// The requests of `ioctlSet(kind)`.
    public static func allowedIoctls(_ kind: ThreadKind) -> [UInt32] {
        let set = ioctlSet(kind)
        return (0..<passage_seccomp_ioctl_count(set)).map { passage_seccomp_ioctl(set, $0) }
    }

    /// Installs the filter of `kind` on the calling thread. `enforce: false` makes forbidden calls
    /// fail with EPERM instead of killing the process (tests).
    public static func install(_ kind: ThreadKind, enforce: Bool = true) throws(VMMError) {
        let list = allowed(kind)
        let r = list.withUnsafeBufferPointer { passage_seccomp_install($0.baseAddress, Int32($0.count), ioctlSet(kind), enforce ? 1 : 0) }
        guard r == 0 else {
            throw VMMError(.io, "cannot install the seccomp filter of the \(kind.rawValue) thread: \(String(cString: strerror(-r))) (run with --no-seccomp to do without)")
        }
    }

    /// Closes every inherited descriptor above stderr (the VMM uses only what it opens itself).
    public static func closeInheritedDescriptors() { _ = passage_close_inherited_fds() }
}
