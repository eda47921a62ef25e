#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the guest's serial console goes: a file descriptor, written a line at a time (at once,
/// byte by byte, when it is a terminal, so prompts show).
public final class Console: @unchecked Sendable {
    let fd: Int32
    let ownsFD: Bool
    let immediate: Bool
    private var buffer: [UInt8] = []

    /// Standard output.
    public static func standardOutput() -> Console { Console(fd: 1, owns: false) }

    /// A file, created or truncated.
    public static func file(_ path: String) throws(VMMError) -> Console {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw VMMError(.io, "cannot open the console file \(path): \(String(cString: strerror(errno)))") }
        return Console(fd: fd, owns: true)
    }

    /// Discards everything.
    public static func none() -> Console { Console(fd: -1, owns: false) }

    init(fd: Int32, owns: Bool) {
        self.fd = fd
        self.ownsFD = owns
        self.immediate = fd >= 0 && isatty(fd) != 0
        buffer.reserveCapacity(4096)
    }

    deinit {
        flush()
        if ownsFD { close(fd) }
    }

    /// One byte from the UART (called under the I/O bus lock).
    public func put(_ byte: UInt8) {
        guard fd >= 0 else { return }
        buffer.append(byte)
        if immediate || byte == 10 || buffer.count >= 4096 { flush() }
    }

    public func flush() {
        guard fd >= 0, !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { b in
            var done = 0
            while done < b.count {
                let r = write(fd, b.baseAddress! + done, b.count - done)
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { break }
                done += r
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }
}
