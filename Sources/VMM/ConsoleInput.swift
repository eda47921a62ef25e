#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Interactive console: when the console is standard output and standard input is a terminal,
/// the terminal goes raw and typed bytes reach the guest's UART; Ctrl-A x stops the VM.
final class ConsoleInput: @unchecked Sendable {
    private var saved = termios()
    let serial: Serial8250
    let io: IOBus
    let control: MachineControl
    let sandbox: Bool

    private init(serial: Serial8250, io: IOBus, control: MachineControl, sandbox: Bool) {
        self.serial = serial
        self.io = io
        self.control = control
        self.sandbox = sandbox
    }

    static func start(config: VMConfig, serial: Serial8250, io: IOBus, control: MachineControl, sandbox: Bool = false) -> ConsoleInput? {
        guard config.console == .stdout, isatty(0) != 0 else { return nil }
        let input = ConsoleInput(serial: serial, io: io, control: control, sandbox: sandbox)
        guard tcgetattr(0, &input.saved) == 0 else { return nil }
        var raw = input.saved
        cfmakeraw(&raw)
        raw.c_oflag |= tcflag_t(OPOST | ONLCR)
        tcsetattr(0, TCSANOW, &raw)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(input).toOpaque()
        if pthread_create(&thread, nil, { arg in
            Unmanaged<ConsoleInput>.fromOpaque(arg!).takeRetainedValue().loop()
            return nil
        }, box) == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<ConsoleInput>.fromOpaque(box).release()
        }
        return input
    }

    func restore() { tcsetattr(0, TCSANOW, &saved) }

    private func loop() {
        var set = sigset_t()
        sigfillset(&set)
        pthread_sigmask(SIG_SETMASK, &set, nil)
        if sandbox {
            do { try VMMSeccomp.install(.console) } catch { control.stop(.failed(error.message)); return }
        }
        var buf = [UInt8](repeating: 0, count: 64)
        var escape = false
        while !control.isStopping {
            let n = read(0, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            var out: [UInt8] = []
            for b in buf[0..<n] {
                if escape {
                    escape = false
                    if b == UInt8(ascii: "x") { control.stop(.stopped("Ctrl-A x")); return }
                    out.append(b)
                } else if b == 0x01 {
                    escape = true
                } else {
                    out.append(b)
                }
            }
            io.withLock { serial.receive(out) }
        }
    }
}
