#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An owned anonymous private mapping (guest RAM, test guests). Unmapped on deinit.
///
/// The pages are not touched here: the kernel supplies zeroed pages as the guest first uses
/// them, so a VM's resident memory grows with what the guest really touches.
public final class AnonymousMemory: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let size: Int

    /// Alignment of mappings of at least this size: a transparent huge page (x86-64: 2 MiB).
    public static let hugePageSize = 2 << 20

    /// Maps `size` bytes (rounded up to the page size). `hugePages` asks for transparent huge
    /// pages with `madvise(MADV_HUGEPAGE)`, which the kernel may ignore.
    ///
    /// Mappings of 2 MiB or more start on a 2 MiB boundary (as QEMU aligns guest RAM): only
    /// then can transparent huge pages back them, and only when host address and guest-physical
    /// address agree modulo 2 MiB does KVM map the guest's memory with 2 MiB pages (one nested
    /// page fault per 2 MiB instead of 512; seconds of a boot under nested virtualization).
    /// Linux before 6.7 does not align anonymous mappings by itself.
    public init(size: Int, hugePages: Bool = false) throws(KVMError) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard size > 0 else { throw KVMError(.invalidArgument, "a memory mapping needs a size above 0") }
        let rounded = (size + page - 1) / page * page
        let align = rounded >= Self.hugePageSize ? Self.hugePageSize : page
        // Reserve room to slide to the boundary, then give back the head and tail.
        let reserve = rounded + align - page
        let raw = mmap(nil, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let raw, raw != MAP_FAILED else {
            throw KVMError.call("mmap \(rounded) bytes of anonymous memory", errno: errno)
        }
        let start = (Int(bitPattern: raw) + align - 1) / align * align
        let head = start - Int(bitPattern: raw)
        if head > 0 { munmap(raw, head) }
        let tail = reserve - head - rounded
        let p = raw + head
        if tail > 0 { munmap(p + rounded, tail) }
        if hugePages { _ = madvise(p, rounded, MADV_HUGEPAGE) }
        self.pointer = p
        self.size = rounded
    }

    deinit { munmap(pointer, size) }

    /// Copies bytes in at `offset`. The caller has checked the range.
    public func write(_ bytes: some Collection<UInt8>, at offset: Int) {
        precondition(offset >= 0 && offset + bytes.count <= size, "write past the end of the mapping")
        var p = pointer + offset
        for b in bytes { p.storeBytes(of: b, as: UInt8.self); p += 1 }
    }

    /// Bytes resident in RAM (`mincore`): what the guest has touched.
    public func residentBytes() -> Int {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = size / page
        var vec = [UInt8](repeating: 0, count: pages)
        guard mincore(pointer, size, &vec) == 0 else { return -1 }
        return vec.reduce(0) { $0 + Int($1 & 1) } * page
    }
}
