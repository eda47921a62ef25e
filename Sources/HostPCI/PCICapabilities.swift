/// The capabilities of a function that matter for passthrough, decoded from configuration space
/// after libpci has walked its capability lists.
public struct PCICapabilities: Sendable, Hashable {
    public var msi: MSI?
    public var msix: MSIX?
    public var pciExpress: PCIExpress?
    public var sriov: SRIOVCapability?
    public var acs: ACS?
    public var ari: Bool
    /// Every capability present, in list order: `pm`, `msi`, `pcie`, … and `ext:aer`, `ext:sriov`, …
    public var all: [String]

    public struct MSI: Sendable, Hashable {
        /// Multiple Message Capable: vectors the function can request (1, 2, 4 … 32).
        public var vectors: Int
        public var is64Bit: Bool
        public var perVectorMasking: Bool
        public var enabled: Bool
    }

    public struct MSIX: Sendable, Hashable {
        public var tableSize: Int
        public var tableBAR: Int
        public var tableOffset: UInt32
        public var pbaBAR: Int
        public var pbaOffset: UInt32
        public var enabled: Bool
    }

    public struct PCIExpress: Sendable, Hashable {
        public enum PortType: String, Sendable {
            case endpoint, legacyEndpoint = "legacy-endpoint", rootPort = "root-port"
            case upstreamPort = "upstream-port", downstreamPort = "downstream-port"
            case pcieToPCIBridge = "pcie-to-pci-bridge", pciToPCIeBridge = "pci-to-pcie-bridge"
            case rootComplexIntegratedEndpoint = "rc-integrated-endpoint"
            case rootComplexEventCollector = "rc-event-collector", unknown
        }
        public var portType: PortType
        /// Function Level Reset supported (Device Capabilities bit 28).
        public var flr: Bool
    }

    /// The SR-IOV extended capability as the device advertises it.
    public struct SRIOVCapability: Sendable, Hashable {
        public var initialVFs: Int
        public var totalVFs: Int
        public var numVFs: Int
        public var firstVFOffset: Int
        public var vfStride: Int
        public var vfDeviceID: UInt16
    }

    /// Access Control Services: what the function can enforce and what is enabled.
    public struct ACS: Sendable, Hashable {
        public var capability: UInt16
        public var control: UInt16
        /// Names of the controls enabled (`sv`, `tb`, `rr`, `cr`, `uf`, `ec`, `dt`).
        public var enabledNames: [String] {
            let names = ["sv", "tb", "rr", "cr", "uf", "ec", "dt"]
            return names.enumerated().filter { control & (1 << $0.offset) != 0 }.map(\.element)
        }
    }

    static func name(ofStandard id: UInt16) -> String {
        switch id {
        case 0x01: "pm"
        case 0x02: "agp"
        case 0x03: "vpd"
        case 0x04: "slot-id"
        case 0x05: "msi"
        case 0x06: "hot-swap"
        case 0x07: "pcix"
        case 0x08: "ht"
        case 0x09: "vendor"
        case 0x0a: "debug"
        case 0x0b: "ccrc"
        case 0x0c: "hotplug"
        case 0x0d: "ssvid"
        case 0x0e: "agp3"
        case 0x0f: "secure"
        case 0x10: "pcie"
        case 0x11: "msix"
        case 0x12: "sata"
        case 0x13: "af"
        case 0x14: "ea"
        default: "0x" + hex(id, 2)
        }
    }

    static func name(ofExtended id: UInt16) -> String {
        let n: String = switch id {
        case 0x01: "aer"
        case 0x02, 0x09: "vc"
        case 0x03: "dsn"
        case 0x04: "power-budget"
        case 0x0b: "vendor"
        case 0x0d: "acs"
        case 0x0e: "ari"
        case 0x0f: "ats"
        case 0x10: "sriov"
        case 0x11: "mriov"
        case 0x12: "multicast"
        case 0x13: "pri"
        case 0x15: "rebar"
        case 0x16: "dpa"
        case 0x17: "tph"
        case 0x18: "ltr"
        case 0x19: "secondary-pcie"
        case 0x1b: "pasid"
        case 0x1d: "dpc"
        case 0x1e: "l1ss"
        case 0x1f: "ptm"
        case 0x23: "dvsec"
        case 0x24: "vf-rebar"
        case 0x25: "dlf"
        case 0x26: "pl-16gt"
        case 0x27: "lane-margining"
        case 0x2a: "pl-32gt"
        case 0x2e: "doe"
        default: "0x" + hex(id, 2)
        }
        return "ext:" + n
    }
}
