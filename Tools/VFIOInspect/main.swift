// vfio-inspect ADDRESS: opens a PCI function bound to vfio-pci through Passage's VFIO layer
// (container type1v2, its group, the device) and prints what it finds as JSON: device info,
// every region (with sparse mmap areas), every interrupt index, the vendor/device ids read from
// the configuration region, the first dword of BAR0 through an mmap, a DMA map/unmap of 2 MiB,
// MSI-X vector 0 routed to an eventfd and back, and a reset. The lab's vfio-device scenario
// compares it with sysfs. Exit 1 with the error's message on failure.
import CLinux
import VFIO

#if canImport(Glibc)
import Glibc
#endif

func fail(_ m: String) -> Never {
    let text = Array("vfio-inspect: \(m)\n".utf8)
    _ = text.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

func json(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        default: out.unicodeScalars.append(c)
        }
    }
    return out + "\""
}
func hex(_ v: some BinaryInteger) -> String { json("0x" + String(v, radix: 16)) }

let args = CommandLine.arguments
guard args.count == 2 else { fail("usage: vfio-inspect DDDD:BB:DD.F (bound to vfio-pci)") }
let address = args[1]
var link = [CChar](repeating: 0, count: 4096)
let n = readlink("/sys/bus/pci/devices/\(address)/iommu_group", &link, link.count - 1)
guard n > 0 else { fail("\(address) has no IOMMU group (is the IOMMU on?)") }
let groupPath = String(decoding: link[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
guard let groupNumber = Int(groupPath.split(separator: "/").last ?? "") else { fail("cannot read the IOMMU group of \(address)") }

do {
    let container = try VFIOContainer()
    let group = try VFIOGroup(number: groupNumber)
    try group.attach(to: container)
    let device = try group.device(address)
    var out: [String] = []
    out.append("\"address\": \(json(address)), \"group\": \(groupNumber), \"viable\": \(try group.isViable())")
    out.append("\"flags\": \(device.info.flags), \"pci\": \(device.info.isPCI), \"canReset\": \(device.info.canReset), \"regionCount\": \(device.info.regions), \"irqCount\": \(device.info.irqs)")
    var regions: [String] = []
    // BARs, ROM and configuration space (the VGA region, index 8, exists only for VGA devices).
    for i in 0..<min(device.info.regions, 8) {
        let r = try device.region(i)
        let areas = r.sparseAreas.map { "{\"offset\": \(hex($0.offset)), \"size\": \(hex($0.size))}" }.joined(separator: ", ")
        regions.append("{\"index\": \(i), \"size\": \(hex(r.size)), \"offset\": \(hex(r.offset)), \"read\": \(r.readable), \"write\": \(r.writable), \"mmap\": \(r.mappable), \"msixMappable\": \(r.msixMappable), \"sparse\": [\(areas)]}")
    }
    out.append("\"regions\": [\(regions.joined(separator: ", "))]")
    var irqs: [String] = []
    for i in 0..<device.info.irqs {
        let q = try device.interrupt(i)
        irqs.append("{\"index\": \(i), \"count\": \(q.count), \"eventfd\": \(q.eventfdCapable), \"maskable\": \(q.maskable)}")
    }
    out.append("\"irqs\": [\(irqs.joined(separator: ", "))]")
    let config = try device.region(VFIODevice.PCIRegion.config.rawValue)
    let ids = try device.read(config, at: 0, count: 4)
    out.append("\"vendor\": \(json(String(format4(UInt16(ids[0]) | UInt16(ids[1]) << 8)))), \"device\": \(json(String(format4(UInt16(ids[2]) | UInt16(ids[3]) << 8))))")
    let bar0 = try device.region(VFIODevice.PCIRegion.bar0.rawValue)
    if bar0.size > 0 && bar0.mappable {
        // Memory decoding on (command register bit 1) so the BAR answers.
        var cmd = try device.read(config, at: 4, count: 2)
        cmd[0] |= 0x02
        try device.write(config, at: 4, cmd)
        let areaSize = bar0.sparseAreas.first.map { ($0.offset, $0.size) } ?? (0, bar0.size)
        let mapping = try device.map(bar0, offset: areaSize.0, size: min(areaSize.1, 4096))
        out.append("\"bar0Dword0\": \(hex(mapping.read32(0))), \"bar0Dword1\": \(hex(mapping.read32(4)))")
    }
    let dmaSize = 2 << 20
    guard let memory = mmap(nil, dmaSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), memory != MAP_FAILED else { fail("mmap of DMA memory") }
    try container.mapDMA(iova: 0x1000_0000, vaddr: memory, size: UInt64(dmaSize))
    let unmapped = try container.unmapDMA(iova: 0x1000_0000, size: UInt64(dmaSize))
    out.append("\"dmaMappedAndUnmapped\": \(unmapped)")
    let msix = try device.interrupt(VFIODevice.PCIInterrupt.msix.rawValue)
    if msix.count > 0 {
        let efd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        try device.setInterruptEventFDs(.msix, [efd])
        try device.disableInterrupts(.msix)
        close(efd)
        out.append("\"msixEventfdRouted\": true")
    }
    if device.info.canReset {
        try device.reset()
        out.append("\"reset\": true")
    }
    print("{" + out.joined(separator: ", ") + "}")
} catch {
    fail(error.message)
}

func format4(_ v: UInt16) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 4 - s.count) + s
}
