import KVM

/// CPUID for each vCPU, from what KVM supports: APIC ids, the topology (one package, one thread
/// per core, `count` cores), the hypervisor bit, and no architectural PMU.
public struct CPUIDTemplate: Sendable {
    public let supported: [CPUIDEntry]
    public let tscDeadline: Bool

    public init(supported: [CPUIDEntry], tscDeadline: Bool) {
        self.supported = supported
        self.tscDeadline = tscDeadline
    }

    public var isAMD: Bool {
        guard let leaf0 = supported.first(where: { $0.function == 0 }) else { return false }
        return leaf0.ebx == 0x6874_7541 // "Auth"
    }

    /// Bits needed to number `count` things (ceil(log2(count))).
    static func bits(_ count: Int) -> UInt32 {
        var b: UInt32 = 0
        while (1 << b) < count { b += 1 }
        return b
    }

    /// The CPUID of vCPU `index` (APIC id = index) of `count`.
    public func entries(for index: Int, of count: Int) -> [CPUIDEntry] {
        let apicID = UInt32(index)
        let n = UInt32(count)
        let shift = Self.bits(count)
        return supported.map { original in
            var e = original
            switch e.function {
            case 1:
                e.ebx = (apicID << 24) | (n << 16) | (8 << 8) | (e.ebx & 0xFF)
                e.ecx |= 1 << 31                                      // hypervisor present
                if tscDeadline { e.ecx |= 1 << 24 }
                if count > 1 { e.edx |= 1 << 28 } else { e.edx &= ~(1 << 28) } // HTT: several logical CPUs
            case 4:
                // Cores per package − 1 in 31:26; caches above L2 are shared by all cores.
                let level = (e.eax >> 5) & 0x7
                let sharing: UInt32 = level >= 3 ? n - 1 : 0
                e.eax = (e.eax & 0x3FFF) | (sharing << 14) | ((n - 1) << 26)
            case 6:
                e.ecx &= ~UInt32(1 << 3) // no energy/performance bias MSR
            case 0xA:
                e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0 // no architectural PMU
            case 0xB, 0x1F:
                switch e.index {
                case 0: e.eax = 0; e.ebx = 1; e.ecx = (1 << 8)            // SMT level: one thread
                case 1: e.eax = shift; e.ebx = n; e.ecx = (2 << 8) | 1    // core level
                default: e.eax = 0; e.ebx = 0; e.ecx = e.index
                }
                e.edx = apicID
            case 0x8000_0008 where isAMD:
                e.ecx = (e.ecx & ~0xF0FF) | (shift << 12) | (n - 1)
            case 0x8000_001E where isAMD:
                e.eax = apicID; e.ebx = apicID & 0xFF; e.ecx = 0
            default:
                break
            }
            return e
        }
    }
}
