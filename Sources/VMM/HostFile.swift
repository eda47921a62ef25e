#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A file opened read-only for loading into guest memory: size, and reads straight into a
/// host pointer (no intermediate copy, so a large initramfs costs no VMM memory). Closed on deinit.
final class HostFile {
    let path: String
    let fd: Int32
    let size: Int

    /// Opens `path`; `what` names the file in errors ("the kernel image", "the initramfs").
    init(_ path: String, what: String, code: VMMError.Code) throws(VMMError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            let reason = e == ENOENT ? "no such file" : String(cString: strerror(e))
            throw VMMError(code, "cannot open \(what) \(path): \(reason)")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw VMMError(code, "\(what) \(path) is not a regular file")
        }
        self.fd = fd
        self.size = Int(st.st_size)
    }

    deinit { close(fd) }

    /// Reads `count` bytes from `offset` into `destination`.
    func read(into destination: UnsafeMutableRawPointer, count: Int, offset: Int) throws(VMMError) {
        var done = 0
        while done < count {
            let r = pread(fd, destination + done, count - done, off_t(offset + done))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { throw VMMError(.io, "reading \(path): \(r < 0 ? String(cString: strerror(errno)) : "unexpected end of file")") }
            done += r
        }
    }

    /// `count` bytes from `offset`, which must lie inside the file.
    func bytes(_ count: Int, at offset: Int) throws(VMMError) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: count)
        var failure: VMMError?
        b.withUnsafeMutableBytes { p in
            do throws(VMMError) { try read(into: p.baseAddress!, count: count, offset: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return b
    }

    /// The first `count` bytes (fewer if the file is shorter).
    func prefix(_ count: Int) throws(VMMError) -> [UInt8] { try bytes(min(count, size), at: 0) }
}
