import Foundation
import PassageAPI
import Testing

/// `UnixHTTPClient` against a raw server on a real Unix socket that writes its answers the way a
/// busy daemon does: a head, then a large body in pieces with pauses between them.
@Suite struct UnixHTTPClientTests {
    /// Serves one connection per answer, in turn: reads a request head, then writes the answer's
    /// parts with 20 ms pauses between them and closes the connection.
    static func serve(_ path: String, _ answers: [[[UInt8]]]) throws {
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) } }
        unlink(path)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard bound == 0, listen(listener, 4) == 0 else { throw TestSetupError("cannot listen on \(path): \(String(cString: strerror(errno)))") }
        Thread {
            for parts in answers {
                let fd = accept(listener, nil, nil)
                var head = [UInt8](repeating: 0, count: 4096)
                _ = recv(fd, &head, head.count, 0)
                for p in parts {
                    var off = 0
                    while off < p.count {
                        let n = p[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        if n <= 0 { break }
                        off += n
                    }
                    usleep(20_000)
                }
                close(fd)
            }
            close(listener)
        }.start()
    }

    @Test func aLargeBodyInPiecesArrivesWholeAndACutOneIsAnError() throws {
        let path = FileManager.default.currentDirectoryPath + "/.build/client-test-\(getpid()).sock"
        defer { unlink(path) }
        // 3 MiB of a repeating pattern, the head and the first bytes together, the rest in 3 pieces.
        let body = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
        let third = body.count / 3
        let cutAnswer = [Array("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".utf8) + [UInt8](repeating: 0x41, count: 10)]
        try Self.serve(path, [[head + body[0..<100], Array(body[100..<third]), Array(body[third..<2 * third]), Array(body[(2 * third)...])], cutAnswer, cutAnswer])
        let r = try UnixHTTPClient(socketPath: path, timeout: 5).request("GET", "/v1/devices")
        #expect(r.status == 200 && r.body.count == body.count && r.body == body)

        // The server goes away 10 bytes into a 1000-byte body (twice: the client tries a request once
        // more on a new connection): an error that says so, not a short body.
        do {
            let cut = try UnixHTTPClient(socketPath: path, timeout: 5).request("GET", "/v1/devices")
            Issue.record("a cut body came back as \(cut.body.count) bytes")
        } catch {
            #expect("\(error)".contains("in the middle of a 1000-byte answer"), "\(error)")
        }
    }
}
