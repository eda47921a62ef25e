// Exit round-trip benchmark, passage-vmm's side: the same real-mode guest as
// minimal-kvm-loop.c (N × `out 0x10, al`), run through the KVM module's `runOnce()` and the
// VMM's exit handler and I/O bus, exactly the path a vCPU thread takes. run.sh compares it
// with the C loop. Prints "swift exits=N seconds=S ns_per_exit=X".
import KVM
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Counts the bytes written to its port.
final class Sink: PortIODevice {
    var count = 0
    var sum = 0
    func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {}
    func write(offset: UInt16, data: UnsafeRawBufferPointer) { count += 1; sum &+= Int(data[0]) }
}

let n = CommandLine.arguments.count > 1 ? UInt32(CommandLine.arguments[1])! : 1_000_000
let code: [UInt8] = [
    0x66, 0xB9, UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24), // mov ecx, n
    0xE6, 0x10,             // loop: out 0x10, al
    0x66, 0x49,             // dec ecx
    0x75, 0xFA,             // jnz loop
    0xF4,                   // hlt
]
do {
    let kvm = try KVMSystem()
    let vm = try kvm.createVM()
    let mem = try AnonymousMemory(size: 0x10000)
    mem.write(code, at: 0x1000)
    try vm.setMemoryRegion(slot: 0, guestAddress: 0, size: UInt64(mem.size), host: mem.pointer)
    let vcpu = try vm.createVCPU(id: 0)
    var s = try vcpu.specialRegisters()
    s.cs.base = 0
    s.cs.selector = 0
    try vcpu.setSpecialRegisters(s)
    var r = try vcpu.registers()
    r.rip = 0x1000
    r.rflags = 2
    try vcpu.setRegisters(r)

    let bus = IOBus()
    let sink = Sink()
    bus.register(sink, base: 0x10, count: 1)
    let handler = ExitHandler(io: bus)
    var t0 = timespec(), t1 = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t0)
    loop: while true {
        let kvmExit = try vcpu.runOnce()
        switch kvmExit {
        case .halt: break loop
        case .interrupted: continue
        default:
            if let end = handler.handle(kvmExit, vcpu: 0) { print("unexpected end: \(end)"); exit(1) }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1)
    let seconds = Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) / 1e9
    let ns = seconds * 1e9 / Double(sink.count)
    print("swift exits=\(sink.count) seconds=\(String(format3(seconds))) ns_per_exit=\(Int(ns.rounded()))")
} catch {
    print("vmm-exit-bench: \(error)")
    exit(1)
}

func format3(_ x: Double) -> String {
    let v = Int((x * 1000).rounded())
    let frac = v % 1000
    return "\(v / 1000)." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + "\(frac)"
}
