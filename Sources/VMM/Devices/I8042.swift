/// The i8042 keyboard controller, as far as a guest without a keyboard needs it: the
/// controller's own commands answer at once (every unanswered command costs Linux's probe a
/// 500 ms timeout of status polls, each a VM exit), and the two ways a guest
/// resets the machine through it — command 0xFE (pulse reset) and writing an output port value
/// with bit 0 clear — end the VM.
public final class I8042: PortIODevice {
    /// Register the device on ports 0x60…0x64: 0x60 data, 0x64 status/command. (0x61, the
    /// speaker port, belongs to the in-kernel PIT; 0x62 and 0x63 do nothing.)
    public static let basePort: UInt16 = 0x60
    public static let portCount: UInt16 = 5

    private var output: [UInt8] = []
    private var commandByte: UInt8 = 0x47 // keyboard interrupt, system flag, translation
    private var pendingCommand: UInt8?
    private let reset: () -> Void

    /// `reset` is called when the guest resets the machine.
    public init(reset: @escaping () -> Void) {
        self.reset = reset
    }

    public func read(offset: UInt16, data: UnsafeMutableRawBufferPointer) {
        var v: UInt8
        switch offset {
        case 4: v = 0x14 | (output.isEmpty ? 0 : 0x01) // system flag, inhibit switch off, OBF
        case 0: v = output.isEmpty ? 0 : output.removeFirst()
        default: v = 0
        }
        data.initializeMemory(as: UInt8.self, repeating: 0)
        if !data.isEmpty { data[0] = v }
    }

    public func write(offset: UInt16, data: UnsafeRawBufferPointer) {
        guard let v = data.first else { return }
        if offset == 4 {
            pendingCommand = nil
            switch v {
            case 0x20: output.append(commandByte)        // read command byte
            case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: pendingCommand = v // a data byte follows
            case 0xAA: output.append(0x55)                 // controller self-test passed
            case 0xAB: output.append(0x00)                 // keyboard interface test passed
            case 0xA9: output.append(0x01)                 // aux interface test: clock stuck low, no mouse port
            case 0xA7: commandByte |= 0x20                 // disable aux
            case 0xA8: commandByte &= ~0x20                // enable aux
            case 0xAD: commandByte |= 0x10                 // disable keyboard
            case 0xAE: commandByte &= ~0x10                // enable keyboard
            case 0xFE: reset()                             // pulse the reset line
            default: break                                 // enable/disable ports, …
            }
            return
        }
        guard offset == 0 else { return }
        switch pendingCommand {
        case 0x60: commandByte = v
        case 0xD1: if v & 0x01 == 0 { reset() }            // output port: bit 0 is the reset line
        case 0xD3: output.append(~v)                       // aux loopback: answer at once, but not the byte
                                                            // sent, so the guest decides there is no aux port
        default: break                                      // keyboard/aux bytes: no device attached
        }
        pendingCommand = nil
    }
}
