/// A 16550A-compatible UART (the 8250 family Linux's `ttyS0` drives), enough for a console:
/// transmit goes to a sink at once (the transmitter is always empty), received bytes queue up,
/// and the THR-empty and data-ready interrupts are raised as edges on the UART's IRQ.
public final class Serial8250: PortIODevice {
    /// COM1.
    public static let com1Base: UInt16 = 0x3F8
    public static let com1IRQ: UInt32 = 4

    // Register bits.
    static let ierDataReady: UInt8 = 0x01, ierTHREmpty: UInt8 = 0x02
    static let iirNone: UInt8 = 0x01, iirTHREmpty: UInt8 = 0x02, iirDataReady: UInt8 = 0x04, iirFIFO: UInt8 = 0xC0
    static let lcrDLAB: UInt8 = 0x80
    static let lsrDataReady: UInt8 = 0x01, lsrTHREmpty: UInt8 = 0x20, lsrIdle: UInt8 = 0x40
    static let mcrLoop: UInt8 = 0x10

    private var ier: UInt8 = 0
    private var lcr: UInt8 = 0x03
    private var mcr: UInt8 = 0x08
    private var scr: UInt8 = 0
    private var fcr: UInt8 = 0
    private var dll: UInt8 = 0x0C, dlm: UInt8 = 0
    private var threPending = false
    private var rx: [UInt8] = []
    private var rxHead = 0

    private let output: (UInt8) -> Void
    private let interrupt: () -> Void

    /// `output` gets each transmitted byte; `interrupt` raises the UART's IRQ (an edge).
    public init(output: @escaping (UInt8) -> Void, interrupt: @escaping () -> Void) {
        self.output = output
        self.interrupt = interrupt
    }

    var rxCount: Int { rx.count - rxHead }

    /// Bytes typed at the console. Call with the bus lock held (`IOBus` serializes devices).
    public func receive(_ bytes: some Sequence<UInt8>) {
        let wasEmpty = rxCount == 0
        rx.append(contentsOf: bytes)
        if wasEmpty && rxCount > 0 && ier & Self.ierDataReady != 0 { interrupt() }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        guard let v = data.first else { return }
        let dlab = lcr & Self.lcrDLAB != 0
        switch offset {
        case 0 where dlab: dll = v
        case 0:
            if mcr & Self.mcrLoop != 0 { receive([v]) } else { output(v) }
            if ier & Self.ierTHREmpty != 0 { threPending = true; interrupt() }
        case 1 where dlab: dlm = v
        case 1:
            let old = ier
            ier = v & 0x0F
            if ier & Self.ierTHREmpty != 0 && old & Self.ierTHREmpty == 0 { threPending = true; interrupt() }
            if ier & Self.ierDataReady != 0 && old & Self.ierDataReady == 0 && rxCount > 0 { interrupt() }
        case 2: fcr = v
            if v & 0x02 != 0 { rx.removeAll(keepingCapacity: true); rxHead = 0 }
        case 3: lcr = v
        case 4: mcr = v & 0x1F
        case 7: scr = v
        default: break
        }
    }

    public func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {
        let dlab = lcr & Self.lcrDLAB != 0
        var v: UInt8
        switch offset {
        case 0 where dlab: v = dll
        case 0:
            if rxCount > 0 {
                v = rx[rxHead]; rxHead += 1
                if rxHead == rx.count { rx.removeAll(keepingCapacity: true); rxHead = 0 }
                if rxCount > 0 && ier & Self.ierDataReady != 0 { interrupt() }
            } else { v = 0 }
        case 1 where dlab: v = dlm
        case 1: v = ier
        case 2:
            if rxCount > 0 && ier & Self.ierDataReady != 0 {
                v = Self.iirDataReady
            } else if threPending && ier & Self.ierTHREmpty != 0 {
                v = Self.iirTHREmpty
                threPending = false
            } else {
                v = Self.iirNone
            }
            if fcr & 0x01 != 0 { v |= Self.iirFIFO }
        case 3: v = lcr
        case 4: v = mcr
        case 5: v = Self.lsrTHREmpty | Self.lsrIdle | (rxCount > 0 ? Self.lsrDataReady : 0)
        case 6:
            if mcr & Self.mcrLoop != 0 {
                // DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
                v = ((mcr & 0x01) << 5) | ((mcr & 0x02) << 3) | ((mcr & 0x04) << 4) | ((mcr & 0x08) << 4)
            } else {
                v = 0xB0 // DCD, DSR, CTS
            }
        case 7: v = scr
        default: v = 0
        }
        data.initializeMemory(as: UInt8.self, repeating: 0)
        if !data.isEmpty { data[0] = v }
    }
}
