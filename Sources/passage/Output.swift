import Foundation
import PassageAPI

#if canImport(Glibc)
import Glibc
#endif

/// Writes JSON for scripts: pretty, keys in the order the wire type declares them.
func printJSON<T: Encodable>(_ value: T) throws {
    var bytes = try StreamingJSONEncoder(pretty: true).encode(value)
    bytes.append(UInt8(ascii: "\n"))
    writeStdout(Data(bytes))
}

func writeStdout(_ data: Data) {
    data.withUnsafeBytes { buf in
        var offset = 0
        while offset < buf.count {
            let n = write(STDOUT_FILENO, buf.baseAddress! + offset, buf.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }  // closed pipe (e.g. `| head`): stop quietly
            offset += n
        }
    }
}

func writeStdout(_ text: String) { writeStdout(Data(text.utf8)) }

/// Terminal width when stdout is a terminal; nil when piped (then nothing is truncated).
func terminalWidth() -> Int? {
    guard isatty(STDOUT_FILENO) != 0 else { return nil }
    var size = winsize()
    guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
    return Int(size.ws_col)
}

/// A plain text table: columns padded to their widest cell, the last column cut to the terminal width.
struct Table {
    var headers: [String]
    var rows: [[String]] = []

    func render(width: Int?) -> String {
        var widths = headers.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        var out = ""
        for r in [headers] + rows {
            var line = ""
            for (i, c) in r.enumerated() {
                if i == r.count - 1 { line += c } else { line += c.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0) }
            }
            while line.last == " " { line.removeLast() }
            if let width, line.count > width { line = String(line.prefix(max(width - 1, 1))) + "…" }
            out += line + "\n"
        }
        return out
    }
}
