import Foundation
import CLinux
import Testing
@testable import VMM

/// The VMM's sandbox, checked on a thread of its own in this process: the same filters passage-vmm
/// installs, with forbidden calls failing with EPERM instead of killing the process (passage-vmm
/// kills; the real binary runs under it in VMSupervisorTests and every lab VM).
@Suite("VMM sandbox: seccomp allow-lists per thread kind")
struct VMMSeccompTests {
    struct Outcome: Sendable {
        var installed = false
        var seccompMode = ""
        var noNewPrivs = ""
        var socketErrno: Int32 = 0
        var openErrno: Int32 = 0
        var execErrno: Int32 = 0
        var writeWorked = false
        var ioctlWorked = false
        /// errno of KVM_RUN, TCGETS, TIOCSTI and VFIO_IOMMU_MAP_DMA on a pipe: ENOTTY (or EINVAL)
        /// when the filter let the request through to the kernel, EPERM when it refused it.
        var kvmRunErrno: Int32 = 0
        var tcgetsErrno: Int32 = 0
        var tiocstiErrno: Int32 = 0
        var mapDMAErrno: Int32 = 0
        var eventfdWorked = false
        var pipeErrno: Int32 = 0
    }

    /// Runs `body` on a fresh pthread after installing `kind`'s filter in test mode.
    func onSandboxedThread(_ kind: VMMSeccomp.ThreadKind) -> Outcome {
        final class Box: @unchecked Sendable { var kind: VMMSeccomp.ThreadKind; var out = Outcome(); init(_ k: VMMSeccomp.ThreadKind) { kind = k } }
        let box = Box(kind)
        var thread = pthread_t()
        let arg = Unmanaged.passRetained(box).toOpaque()
        pthread_create(&thread, nil, { raw in
            let b = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { return nil }                 // made before the filter, like the VMM's fds
            defer { close(fds[0]); close(fds[1]) }
            do { try VMMSeccomp.install(b.kind, enforce: false); b.out.installed = true } catch { return nil }
            // /proc/thread-self/status: read with the already-open descriptor trick is not possible
            // after the filter (openat may be forbidden), so the syscalls speak for themselves.
            errno = 0
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            b.out.socketErrno = s < 0 ? errno : 0
            errno = 0
            let f = open("/proc/thread-self/status", O_RDONLY)
            if f >= 0 {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(f, &buf, buf.count)
                let text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
                for line in text.split(separator: "\n") {
                    if line.hasPrefix("Seccomp:") { b.out.seccompMode = line.split(separator: "\t").last.map(String.init) ?? "" }
                    if line.hasPrefix("NoNewPrivs:") { b.out.noNewPrivs = line.split(separator: "\t").last.map(String.init) ?? "" }
                }
                close(f)
            } else {
                b.out.openErrno = errno
            }
            errno = 0
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
            _ = execv("/bin/true", argv)
            b.out.execErrno = errno
            var byte: UInt8 = 7
            b.out.writeWorked = write(fds[1], &byte, 1) == 1
            var pending: Int32 = 0
            b.out.ioctlWorked = ioctl(fds[0], UInt(FIONREAD), &pending) == 0 && pending == 1
            func ioctlErrno(_ request: UInt) -> Int32 { errno = 0; var arg = [UInt8](repeating: 0, count: 64); return ioctl(fds[0], request, &arg) < 0 ? errno : 0 }
            b.out.kvmRunErrno = ioctlErrno(UInt(passage_seccomp_ioctl(Int32(PASSAGE_SECCOMP_IOCTLS_VCPU), 0)))   // KVM_RUN
            b.out.tcgetsErrno = ioctlErrno(UInt(TCGETS))
            b.out.tiocstiErrno = ioctlErrno(UInt(TIOCSTI))
            b.out.mapDMAErrno = ioctlErrno(UInt(passage_VFIO_IOMMU_MAP_DMA))
            var spare: [Int32] = [0, 0]
            b.out.pipeErrno = pipe(&spare) == 0 ? 0 : errno
            let e = eventfd(0, Int32(EFD_CLOEXEC))
            b.out.eventfdWorked = e >= 0
            if e >= 0 { close(e) }
            return nil
        }, arg)
        pthread_join(thread, nil)
        return box.out
    }

    @Test("a vCPU thread: no socket, no open, no exec (EPERM here; SIGSYS in passage-vmm); reads, writes, its five ioctls and eventfds work; other ioctls are refused")
    func vcpu() throws {
        let o = onSandboxedThread(.vcpu)
        #expect(o.installed)
        #expect(o.socketErrno == EPERM && o.openErrno == EPERM && o.execErrno == EPERM && o.pipeErrno == EPERM, "\(o)")
        #expect(o.writeWorked && o.eventfdWorked, "\(o)")
        // KVM_RUN reaches the kernel (which says a pipe is no vCPU); FIONREAD, the terminal's
        // requests, TIOCSTI and VFIO's DMA mapping never do.
        #expect(o.kvmRunErrno == ENOTTY || o.kvmRunErrno == EINVAL, "\(o)")
        #expect(!o.ioctlWorked && o.tcgetsErrno == EPERM && o.tiocstiErrno == EPERM && o.mapDMAErrno == EPERM, "\(o)")
        // The test process itself (other threads) is untouched: this thread's filter was its own.
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(s >= 0)
        if s >= 0 { close(s) }
    }

    @Test("the main thread may open /proc (for --stats) but not make sockets, exec or create eventfds")
    func main() throws {
        let o = onSandboxedThread(.main)
        #expect(o.installed && o.openErrno == 0)
        #expect(o.seccompMode == "2" && o.noNewPrivs == "1", "\(o)")                    // filter mode, no_new_privs
        #expect(o.socketErrno == EPERM && o.execErrno == EPERM && !o.eventfdWorked, "\(o)")
        // The terminal's requests reach the kernel (a pipe is no terminal); KVM's, VFIO's and TIOCSTI do not.
        #expect(o.tcgetsErrno == ENOTTY && o.tiocstiErrno == EPERM && o.kvmRunErrno == EPERM && o.mapDMAErrno == EPERM && !o.ioctlWorked, "\(o)")
    }

    @Test("the ioctl sets: a vCPU's five requests, the terminal's without TIOCSTI; ioctl itself is on no syscall list")
    func ioctlSets() {
        #expect(VMMSeccomp.allowedIoctls(.vcpu).count == 5)
        #expect(VMMSeccomp.allowedIoctls(.vcpu).contains(UInt32(truncatingIfNeeded: passage_KVM_IRQFD)))
        #expect(!VMMSeccomp.allowedIoctls(.vcpu).contains(UInt32(truncatingIfNeeded: passage_VFIO_IOMMU_MAP_DMA)))
        #expect(!VMMSeccomp.allowedIoctls(.vcpu).contains(UInt32(truncatingIfNeeded: passage_KVM_CREATE_VCPU)))
        #expect(Set(VMMSeccomp.allowedIoctls(.main)) == Set([TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ].map { UInt32($0) }))
        #expect(VMMSeccomp.allowedIoctls(.console) == VMMSeccomp.allowedIoctls(.main))
        for kind in VMMSeccomp.ThreadKind.allCases { #expect(!VMMSeccomp.allowed(kind).contains(Int32(SYS_ioctl))) }
        // ioctl given as a plain system call is refused: it goes by its set.
        var list: [Int32] = [Int32(SYS_ioctl)]
        #expect(passage_seccomp_install(&list, 1, Int32(PASSAGE_SECCOMP_IOCTLS_NONE), 0) == -EINVAL)
    }

    @Test("no thread kind allows the calls a sandbox exists to stop")
    func lists() {
        let never = [SYS_socket, SYS_connect, SYS_execve, SYS_execveat, SYS_fork, SYS_vfork, SYS_clone, SYS_clone3,
                     SYS_ptrace, SYS_mount, SYS_setuid, SYS_kill, SYS_process_vm_writev, SYS_bpf, SYS_init_module].map { Int32($0) }
        for kind in VMMSeccomp.ThreadKind.allCases {
            let allowed = Set(VMMSeccomp.allowed(kind))
            #expect(allowed.isDisjoint(with: never), "\(kind): \(allowed.intersection(never))")
            #expect(!allowed.contains(Int32(SYS_openat)) || kind == .main)
        }
    }
}
