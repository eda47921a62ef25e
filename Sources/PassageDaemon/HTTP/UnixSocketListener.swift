#if canImport(Glibc)
import Glibc
#endif

/// Binding the daemon's listening Unix socket: stale-file removal (only when nothing answers on it),
/// permissions before anyone can connect, and systemd socket activation.
enum UnixSocketListener {
    struct Bound {
        var fd: Int32
        /// Identity of the socket file we created, so shutdown removes ours and not a successor's.
        var device: UInt64
        var inode: UInt64
    }

    static func withSockaddr<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) throws -> T {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw HTTPServerError(code: "socket-path-too-long",
                                  message: "socket path \(path) is \(bytes.count) bytes; a Unix socket path must be 1–\(capacity - 1) bytes — choose a shorter --socket")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// True when a server accepts connections on `path`.
    static func somebodyAnswers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let rc = (try? withSockaddr(path) { connect(fd, $0, $1) }) ?? -1
        return rc == 0
    }

    /// Binds and listens on `path`, mode and group applied before `listen`, so no client can connect
    /// through looser permissions.
    static func bind(path: String, mode: mode_t, group: gid_t?, backlog: Int32) throws -> Bound {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw HTTPServerError(code: "not-a-socket",
                                      message: "\(path) exists and is not a socket; refusing to replace it — remove it or choose another --socket")
            }
            if somebodyAnswers(path) {
                throw HTTPServerError(code: "socket-in-use",
                                      message: "another server answers on \(path); stop it (systemctl stop passaged) or choose another --socket")
            }
            // A stale socket from a process that died.
            if unlink(path) != 0 && Glibc.errno != ENOENT {
                throw HTTPServerError.call("unlink", code: "bind-failed", path: path, fix: "remove the stale socket file")
            }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError.call("socket", code: "socket-failed", path: path) }
        var ok = false
        defer { if !ok { close(fd) } }

        let rc = try withSockaddr(path) { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else {
            throw HTTPServerError.call("bind", code: "bind-failed", path: path,
                                       fix: "check that the directory exists and is writable")
        }
        var unlinkOnFailure = true
        defer { if unlinkOnFailure && !ok { unlink(path) } }
        guard chmod(path, mode) == 0 else {
            throw HTTPServerError.call("chmod", code: "chmod-failed", path: path)
        }
        if let group, chown(path, uid_t.max, group) != 0 {
            throw HTTPServerError.call("chown", code: "chown-failed", path: path,
                                       fix: "the daemon must run as root or be a member of group \(group)")
        }
        guard listen(fd, backlog) == 0 else {
            throw HTTPServerError.call("listen", code: "listen-failed", path: path)
        }
        guard stat(path, &st) == 0 else {
            throw HTTPServerError.call("stat", code: "bind-failed", path: path)
        }
        ok = true
        unlinkOnFailure = false
        return Bound(fd: fd, device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Removes the socket file if it is still the one we created.
    static func removeIfOurs(path: String, device: UInt64, inode: UInt64) {
        var st = stat()
        guard lstat(path, &st) == 0, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode else { return }
        unlink(path)
    }

    /// `sd_listen_fds(3)` for one socket: fd 3 when `LISTEN_PID` is this process and `LISTEN_FDS` ≥ 1.
    static func systemdListenDescriptor(unsetEnvironment: Bool) -> Int32? {
        defer {
            if unsetEnvironment {
                unsetenv("LISTEN_PID")
                unsetenv("LISTEN_FDS")
                unsetenv("LISTEN_FDNAMES")
            }
        }
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }),
              let pid = Int32(pidText), pid == getpid(),
              let countText = getenv("LISTEN_FDS").map({ String(cString: $0) }),
              let count = Int(countText), count >= 1
        else { return nil }
        let fd: Int32 = 3  // SD_LISTEN_FDS_START
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else { return nil }
        // Children (passage-vmm) must not inherit the listening socket.
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }
}
