import CLZMA
import CZstd
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a bzImage is unpacked: by passage-vmm before the guest starts (`host`, the default), or
/// by the kernel's own decompressor inside the guest (`guest`, what QEMU and a bootloader do).
///
/// A distribution bzImage is a small decompressor plus the real kernel, xz-compressed. Inside a
/// guest the decompressor spends seconds under nested virtualization (its output is ~60 MiB of
/// freshly touched guest pages); passage-vmm instead unpacks the payload with liblzma, keeps the
/// result in a cache keyed by the bzImage file's identity, loads the ELF's segments where the
/// decompressor would put them, moves the kernel's virtual base by a random 2 MiB-aligned slide
/// with the kernel's own relocation table (KASLR as the decompressor does it; `nokaslr` honoured)
/// and enters the kernel proper at its 64-bit entry point with the bzImage's setup header in the
/// zero page. Payloads that are not xz, kernels whose payload carries no usable ELF, and
/// `guest` mode boot the classic way.
public enum KernelUnpackMode: String, Sendable, Codable, CaseIterable {
    case host, guest
}

/// A read-only or private mapping that is unmapped on deinit.
final class MappedBytes {
    let base: UnsafeMutableRawPointer
    let count: Int
    private let mapping: UnsafeMutableRawPointer
    private let length: Int

    /// `count` bytes of fresh anonymous memory, zero-filled.
    init(anonymous count: Int, what: String) throws(VMMError) {
        length = max(4096, (count + 4095) & ~4095)
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), p != MAP_FAILED else {
            throw VMMError(.notEnoughMemory, "cannot allocate \(count >> 20) MiB for \(what): \(String(cString: strerror(errno)))")
        }
        base = p
        mapping = p
        self.count = count
    }

    /// `count` bytes of `fd` from `offset` (page-aligned by the caller's choice of layout), read-only.
    init(file fd: Int32, offset: Int, count: Int, path: String) throws(VMMError) {
        let skew = offset & 4095
        length = count + skew
        guard let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, off_t(offset - skew)), p != MAP_FAILED else {
            throw VMMError(.io, "cannot map \(path): \(String(cString: strerror(errno)))")
        }
        base = p + skew
        mapping = p
        self.count = count
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    deinit { munmap(mapping, length) }
}

/// The compressed kernel inside a bzImage: the setup header's `payload_offset`/`payload_length`
/// (protocol 2.08+), relative to the protected-mode code.
public struct KernelPayload: Sendable, Equatable {
    public enum Format: String, Sendable { case xz, gzip, bzip2, lzma, lzo, lz4, zstd, unknown }

    /// File offset and length of the compressed payload (the 4-byte size trailer included).
    public let offset: Int
    public let length: Int
    public let format: Format
    /// The unpacked size, from the little-endian word the kernel build appends to the payload.
    public let unpackedSize: Int
    /// `relocatable_kernel` in the header: the kernel may run elsewhere than it was linked for.
    public let relocatable: Bool
    /// `kernel_alignment`: the granularity of a KASLR slide (2 MiB for a distribution kernel).
    public let alignment: UInt64

    /// The most an unpacked kernel may claim: far beyond any real one (a Debian kernel is ~60 MiB).
    public static let maximumUnpackedSize = 512 << 20

    /// Reads the payload's place from the setup header of `image` and its first and last bytes
    /// from `file`. nil when the header has no payload fields or they point outside the file.
    init?(image: LinuxBootImage, read: (_ offset: Int, _ count: Int) throws(VMMError) -> [UInt8]) throws(VMMError) {
        let h = image.setup
        func u32(_ o: Int) -> Int { Int(h[o]) | Int(h[o + 1]) << 8 | Int(h[o + 2]) << 16 | Int(h[o + 3]) << 24 }
        guard image.protocolVersion >= 0x0208, h.count >= 0x250 else { return nil }
        let offset = image.setupSize + u32(0x248), length = u32(0x24C)
        guard length >= 16, offset < image.fileSize, length <= image.fileSize - offset else { return nil }
        let head = try read(offset, 6), trailer = try read(offset + length - 4, 4)
        let magic: [([UInt8], Format)] = [
            ([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], .xz), ([0x1F, 0x8B], .gzip), ([0x42, 0x5A, 0x68], .bzip2),
            ([0x5D, 0x00], .lzma), ([0x89, 0x4C, 0x5A], .lzo), ([0x02, 0x21, 0x4C, 0x18], .lz4), ([0x28, 0xB5, 0x2F, 0xFD], .zstd),
        ]
        self.format = magic.first(where: { head.starts(with: $0.0) })?.1 ?? .unknown
        self.offset = offset
        self.length = length
        self.unpackedSize = Int(trailer[0]) | Int(trailer[1]) << 8 | Int(trailer[2]) << 16 | Int(trailer[3]) << 24
        self.relocatable = h[0x234] != 0
        self.alignment = UInt64(u32(0x230))
    }

    /// The formats `unpack` knows; the guest's own decompressor handles the others.
    public static let hostFormats: Set<Format> = [.xz, .zstd]

    /// Unpacks the payload from `compressed` (the payload's bytes, size trailer included) into new
    /// memory of exactly `unpackedSize` bytes, with liblzma (xz: the stream's CRC32 checked) or
    /// libzstd (zstd: the frame's checksum checked when it has one); a result longer or shorter than
    /// the size the build recorded is refused. `name` is the bzImage's path, for messages.
    func unpack(_ compressed: UnsafeRawBufferPointer, name: String) throws(VMMError) -> MappedBytes {
        guard unpackedSize >= 64, unpackedSize <= Self.maximumUnpackedSize else {
            throw VMMError(.badKernel, "\(name) says its payload unpacks to \(unpackedSize) bytes, outside 64 B … \(Self.maximumUnpackedSize >> 20) MiB: corrupted (or boot it with --kernel-unpack guest)")
        }
        let out = try MappedBytes(anonymous: unpackedSize, what: "the unpacked kernel of \(name)")
        switch format {
        case .xz: try unpackXZ(compressed, into: out, name: name)
        case .zstd: try unpackZstd(compressed, into: out, name: name)
        default: throw VMMError(.badKernel, "\(name): passage-vmm does not unpack \(format.rawValue) payloads (boot it with --kernel-unpack guest)")
        }
        return out
    }

    /// zstd: one frame, then the build's 4-byte size trailer (not given to libzstd).
    private func unpackZstd(_ compressed: UnsafeRawBufferPointer, into out: MappedBytes, name: String) throws(VMMError) {
        guard compressed.count > 4, let base = compressed.baseAddress else {
            throw VMMError(.badKernel, "\(name)'s zstd payload is empty")
        }
        let frame = compressed.count - 4
        guard let context = ZSTD_createDCtx() else { throw VMMError(.notEnoughMemory, "libzstd could not start a decoder for \(name)") }
        defer { ZSTD_freeDCtx(context) }
        // The kernel's build compresses with -22 --ultra: a 128 MiB window (log 27), zstd's default limit.
        let n = ZSTD_decompressDCtx(context, out.base, unpackedSize, base, frame)
        if ZSTD_isError(n) != 0 {
            let code = ZSTD_getErrorCode(n)
            if code == ZSTD_error_dstSize_tooSmall {
                throw VMMError(.badKernel, "\(name)'s payload unpacks to more than the \(unpackedSize) bytes its trailer says: corrupted")
            }
            if code == ZSTD_error_memory_allocation || code == ZSTD_error_frameParameter_windowTooLarge {
                throw VMMError(.notEnoughMemory, "unpacking \(name) needs more memory than libzstd allows: boot it with --kernel-unpack guest")
            }
            throw VMMError(.badKernel, "\(name)'s zstd payload is corrupted (libzstd: \(String(cString: ZSTD_getErrorName(n))))")
        }
        guard n == unpackedSize else {
            throw VMMError(.badKernel, "\(name)'s payload unpacks to \(n) bytes, not the \(unpackedSize) its trailer says: corrupted")
        }
    }

    /// xz: liblzma's stream decoder stops at the end of the stream (before the size trailer).
    private func unpackXZ(_ compressed: UnsafeRawBufferPointer, into out: MappedBytes, name: String) throws(VMMError) {
        var stream = lzma_stream()
        // 256 MiB of decoder memory at most: the kernel's build uses a 32 MiB dictionary.
        guard lzma_stream_decoder(&stream, 256 << 20, 0) == LZMA_OK else {
            throw VMMError(.notEnoughMemory, "liblzma could not start a decoder for \(name)")
        }
        defer { lzma_end(&stream) }
        stream.next_in = compressed.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_in = compressed.count
        stream.next_out = out.base.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = unpackedSize
        let rc = lzma_code(&stream, LZMA_FINISH)
        switch rc {
        case LZMA_STREAM_END:
            guard Int(stream.total_out) == unpackedSize else {
                throw VMMError(.badKernel, "\(name)'s payload unpacks to \(stream.total_out) bytes, not the \(unpackedSize) its trailer says: corrupted")
            }
        case LZMA_OK where stream.avail_out == 0, LZMA_BUF_ERROR where stream.avail_out == 0:
            throw VMMError(.badKernel, "\(name)'s payload unpacks to more than the \(unpackedSize) bytes its trailer says: corrupted")
        case LZMA_DATA_ERROR, LZMA_FORMAT_ERROR, LZMA_BUF_ERROR:
            throw VMMError(.badKernel, "\(name)'s xz payload is corrupted (liblzma: \(rc == LZMA_BUF_ERROR ? "truncated" : "bad data") after \(stream.total_out) bytes)")
        case LZMA_MEMLIMIT_ERROR, LZMA_MEM_ERROR:
            throw VMMError(.notEnoughMemory, "unpacking \(name) needs more memory than passage-vmm allows liblzma (256 MiB): boot it with --kernel-unpack guest")
        default:
            throw VMMError(.badKernel, "\(name)'s xz payload could not be unpacked (liblzma error \(rc.rawValue))")
        }
    }
}

/// The unpacked payloads of bzImages, one file per bzImage path, reused while the bzImage's
/// device, inode, size, mtime and ctime are unchanged (rewriting or replacing the file changes
/// one of them). Each file: a 4 KiB header (magic, that identity, the payload's size, whether the
/// decompressor carries KASLR) and the payload. Written to a temporary file and renamed into
/// place; files and directory are the running user's own (0600, 0700), and a file that is not
/// (another owner, writable by others, a symlink) is never read.
public struct KernelCache: Sendable {
    public let directory: String

    static let magic: [UInt8] = Array("PSGKRNL1".utf8)
    static let headerSize = 4096

    public init(directory: String) { self.directory = directory }

    /// The cache of `setting` (`--kernel-cache`): a directory, `off`/`none` for no cache, or nil
    /// for the default: `$PASSAGE_KERNEL_CACHE`, else `/var/cache/passage/kernels` for root and
    /// `$XDG_CACHE_HOME/passage/kernels` (`~/.cache/…`) for anyone else.
    public static func resolve(_ setting: String?) -> KernelCache? {
        var dir = setting
        if dir == nil, let env = getenv("PASSAGE_KERNEL_CACHE") { dir = String(cString: env) }
        if dir == nil {
            if geteuid() == 0 { dir = "/var/cache/passage/kernels" }
            else if let x = getenv("XDG_CACHE_HOME"), x.pointee != 0 { dir = String(cString: x) + "/passage/kernels" }
            else if let h = getenv("HOME"), h.pointee != 0 { dir = String(cString: h) + "/.cache/passage/kernels" }
        }
        guard let dir, !dir.isEmpty, dir != "off", dir != "none" else { return nil }
        return KernelCache(directory: dir)
    }

    /// The identity of an open bzImage: device, inode, size, mtime and ctime (ns).
    struct Identity: Equatable {
        var words: [UInt64]
        init(fd: Int32) {
            var st = stat()
            fstat(fd, &st)
            words = [UInt64(st.st_dev), UInt64(st.st_ino), UInt64(st.st_size),
                     UInt64(bitPattern: Int64(st.st_mtim.tv_sec)), UInt64(st.st_mtim.tv_nsec),
                     UInt64(bitPattern: Int64(st.st_ctim.tv_sec)), UInt64(st.st_ctim.tv_nsec)]
        }
        init(words: [UInt64]) { self.words = words }
    }

    /// The cache file of the bzImage at `path`: FNV-1a of its canonical path.
    func file(for path: String) -> String {
        let canonical: String
        if let r = realpath(path, nil) { canonical = String(cString: r); free(r) } else { canonical = path }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in canonical.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        let hex = String(h, radix: 16)
        return "\(directory)/vmlinux-\(String(repeating: "0", count: 16 - hex.count))\(hex)"
    }

    /// The cached payload of the bzImage `path` opened as `identity`, and whether its
    /// decompressor has KASLR; nil on a miss or a file not to be trusted.
    func lookup(_ path: String, identity: Identity, size: Int) -> (bytes: MappedBytes, kaslr: Bool)? {
        let fd = open(file(for: path), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid(), st.st_mode & 0o022 == 0,
              Int(st.st_size) == Self.headerSize + size else { return nil }
        var header = [UInt8](repeating: 0, count: 80)
        guard pread(fd, &header, 80, 0) == 80, header.starts(with: Self.magic) else { return nil }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(header[o + $1]) << (8 * $1) } }
        guard Identity(words: (0..<7).map { u64(8 + 8 * $0) }) == identity, u64(64) == UInt64(size) else { return nil }
        guard let bytes = try? MappedBytes(file: fd, offset: Self.headerSize, count: size, path: path) else { return nil }
        return (bytes, u64(72) & 1 != 0)
    }

    /// Stores `payload` for the bzImage `path` opened as `identity`. Throws what went wrong, for a
    /// warning; the boot goes on either way.
    func store(_ path: String, identity: Identity, payload: UnsafeRawBufferPointer, kaslr: Bool) throws(VMMError) {
        try Self.makeDirectory(directory)
        let target = file(for: path)
        var template = Array((target + ".XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw VMMError(.io, "cannot create a file in \(directory): \(String(cString: strerror(errno)))") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let temp = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var ok = false
        defer { close(fd); if !ok { unlink(temp) } }
        var header = [UInt8](repeating: 0, count: Self.headerSize)
        header.replaceSubrange(0..<8, with: Self.magic)
        func put(_ v: UInt64, _ o: Int) { for i in 0..<8 { header[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
        for (i, w) in identity.words.enumerated() { put(w, 8 + 8 * i) }
        put(UInt64(payload.count), 64)
        put(kaslr ? 1 : 0, 72)
        func writeAll(_ p: UnsafeRawPointer, _ n: Int) throws(VMMError) {
            var done = 0
            while done < n {
                let r = write(fd, p + done, n - done)
                if r < 0 && errno == EINTR { continue }
                guard r > 0 else { throw VMMError(.io, "writing \(temp): \(String(cString: strerror(errno)))") }
                done += r
            }
        }
        var failure: VMMError?
        header.withUnsafeBytes { h in do throws(VMMError) { try writeAll(h.baseAddress!, h.count) } catch { failure = error } }
        if let failure { throw failure }
        try writeAll(payload.baseAddress!, payload.count)
        guard fsync(fd) == 0, rename(temp, target) == 0 else {
            throw VMMError(.io, "cannot put \(target) in place: \(String(cString: strerror(errno)))")
        }
        ok = true
    }

    /// `mkdir -p` with mode 0700 for what it creates.
    static func makeDirectory(_ path: String) throws(VMMError) {
        guard path.hasPrefix("/") else { throw VMMError(.io, "the kernel cache \(path) is not an absolute path") }
        var prefix = ""
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + part
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw VMMError(.io, "cannot create \(prefix): \(String(cString: strerror(errno)))")
            }
        }
    }
}
