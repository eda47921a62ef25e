import Foundation
import PassageAPI
import Testing

/// `UnixHTTPClient` against a raw server on a real Unix socket that writes its answers the way a
/// busy daemon does: a head, then a large body in pieces with pauses between them.
@Suite struct UnixHTTPClientTests {
    /// Serves one connection per entry of `connections`, in turn; on each, one exchange after
    /// another: read a request, write the exchange's parts with 20 ms pauses between them (no parts:
    /// close without answering); then close the connection.
    static func serve(_ path: String, _ connections: [[[[UInt8]]]]) throws {
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) } }
        unlink(path)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard bound == 0, listen(listener, 4) == 0 else { throw TestSetupError("cannot listen on \(path): \(String(cString: strerror(errno)))") }
        Thread {
            for exchanges in connections {
                let fd = accept(listener, nil, nil)
                for parts in exchanges {
                    var head = [UInt8](repeating: 0, count: 4096)
                    _ = recv(fd, &head, head.count, 0)
                    if parts.isEmpty { break }
                    for p in parts {
                        var off = 0
                        while off < p.count {
                            let n = p[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                            if n <= 0 { break }
                            off += n
                        }
                        usleep(20_000)
                    }
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
        try Self.serve(path, [[[head + body[0..<100], Array(body[100..<third]), Array(body[third..<2 * third]), Array(body[(2 * third)...])]], [cutAnswer]])
        let r = try UnixHTTPClient(socketPath: path, timeout: 5).request("GET", "/v1/devices")
        #expect(r.status == 200 && r.body.count == body.count && r.body == body)

        // The server goes away 10 bytes into a 1000-byte body: an error that says so, not a short body
        // (a fresh connection: not tried again; the server's third answer is for the next test).
        do {
            let cut = try UnixHTTPClient(socketPath: path, timeout: 5).request("GET", "/v1/devices")
            Issue.record("a cut body came back as \(cut.body.count) bytes")
        } catch {
            #expect("\(error)".contains("in the middle of a 1000-byte answer"), "\(error)")
        }
    }

    /// A kept-alive connection that fails: a read goes again on a new connection; a change whose
    /// request reached the server and whose answer was lost does not (it could be done twice); one
    /// that never left does.
    @Test func onlyWhatCannotBeDoneTwiceIsTriedAgain() throws {
        let path = FileManager.default.currentDirectoryPath + "/.build/client-retry-\(getpid()).sock"
        defer { unlink(path) }
        let ok = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".utf8)
        // Connection 1: a GET answered, a POST read and never answered. Connection 2: a GET answered
        // and the connection closed. Connection 3: answers the POST sent again.
        try Self.serve(path, [[[ok], []], [[ok]], [[ok]]])
        let client = UnixHTTPClient(socketPath: path, timeout: 5)
        #expect(try client.request("GET", "/v1/health").status == 200)
        do {
            _ = try client.request("POST", "/v1/claims", body: Array("{}".utf8))
            Issue.record("a POST that got no answer came back")
        } catch {
            // Not sent again: that would have been a second connection, answered 200.
            #expect("\(error)".contains("closed the connection"), "\(error)")
        }
        #expect(try client.request("GET", "/v1/health").status == 200)   // connection 2, closed after it
        usleep(100_000)
        // Sending on the closed connection fails: never sent, so it goes again (connection 3).
        #expect(try client.request("POST", "/v1/claims", body: Array("{}".utf8)).status == 200)
    }
}
