#if canImport(Glibc)
import Glibc
#endif

/// A small blocking HTTP/1.1 client for the daemon's Unix socket: one keep-alive connection,
/// Content-Length and chunked responses. Used by the CLI and by tests and benchmarks.
public final class UnixHTTPClient {
    public let socketPath: String
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    /// Seconds to wait for a response before giving up.
    public var timeout: Double

    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public struct ClientError: Error, CustomStringConvertible, Sendable {
        public var message: String
        public var errno: Int32?
        public var description: String { message }
    }

    public init(socketPath: String, timeout: Double = 30) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    func connectIfNeeded() throws(ClientError) {
        guard fd < 0 else { return }
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw ClientError(message: "socket(): \(String(cString: strerror(errno)))", errno: errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Glibc.close(s)
            throw ClientError(message: "socket path \(socketPath) is too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in path.enumerated() { p[i] = b }
            p[path.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(s)
            let hint = e == ENOENT || e == ECONNREFUSED ? "is passaged running? (systemctl start passaged)" : e == EACCES ? "the socket is for root and the passage group" : ""
            throw ClientError(message: "cannot connect to \(socketPath): \(String(cString: strerror(e)))" + (hint.isEmpty ? "" : "; \(hint)"), errno: e)
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        fd = s
        buffer = []
    }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Sends one request and reads the whole response. When a kept-alive connection fails (the
    /// server closed it while idle), the request goes once more on a new connection, but only when
    /// that cannot make a change twice: a read (GET), or a request that never left (sending
    /// it failed). A change whose answer was lost is an error; the caller decides (a claim's
    /// idempotency key makes retrying it safe).
    public func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = []) throws(ClientError) -> Response {
        let reused = fd >= 0
        do {
            return try send(method, path, body: body, headers: headers)
        } catch {
            close()
            guard reused, method == "GET" || !requestSent else { throw error }
            return try send(method, path, body: body, headers: headers)
        }
    }

    /// Whether the last `send` got its request onto the socket.
    private var requestSent = false

    private func send(_ method: String, _ path: String, body: [UInt8]?, headers: [(String, String)]) throws(ClientError) -> Response {
        requestSent = false
        try connectIfNeeded()
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nUser-Agent: passage\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        try writeAll(Array(head.utf8) + (body ?? []))
        requestSent = true
        return try readResponse()
    }

    /// Opens a streaming request (the event stream) and calls `line` for each newline-delimited line
    /// until the server ends the stream or `line` returns false.
    public func stream(_ path: String, line: (String) -> Bool) throws(ClientError) {
        try connectIfNeeded()
        try writeAll(Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nUser-Agent: passage\r\n\r\n".utf8))
        let (status, headers) = try readHead()
        guard status == 200 else {
            let body = try readBody(headers)
            throw ClientError(message: String(decoding: body, as: UTF8.self))
        }
        var pending: [UInt8] = []
        var done = false
        try readChunks { chunk in
            pending += chunk
            while let nl = pending.firstIndex(of: 0x0a) {
                let text = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                if !line(text) { done = true; return false }
            }
            return true
        }
        _ = done
        close()
    }

    private func writeAll(_ bytes: [UInt8]) throws(ClientError) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ClientError(message: "sending to \(socketPath) failed: \(String(cString: strerror(errno)))", errno: errno) }
            off += n
        }
    }

    /// Receives what is there (at least `atLeast` bytes of room) straight into the buffer's tail.
    private func fill(atLeast room: Int = 65536) throws(ClientError) {
        let start = buffer.count
        var received = 0
        var failure: Int32 = 0
        buffer.append(contentsOf: repeatElement(0, count: room))  // capacity grows geometrically; bytes are overwritten
        buffer.withUnsafeMutableBytes { raw in
            while true {
                let n = recv(fd, raw.baseAddress! + start, room, 0)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { failure = errno } else { received = n }
                return
            }
        }
        buffer.removeLast(room - received)
        if failure == EAGAIN || failure == EWOULDBLOCK {
            throw ClientError(message: "no answer from \(socketPath) within \(timeout) s", errno: failure)
        }
        guard received > 0 else { throw ClientError(message: "passaged closed the connection", errno: failure != 0 ? failure : nil) }
    }

    private func readHead() throws(ClientError) -> (Int, [String: String]) {
        while true {
            if let end = find([13, 10, 13, 10]) {
                let head = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeSubrange(..<(end + 4))
                var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
                let statusLine = lines.removeFirst().split(separator: " ")
                guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw ClientError(message: "bad status line from passaged") }
                var headers: [String: String] = [:]
                for l in lines {
                    guard let c = l.firstIndex(of: ":") else { continue }
                    headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharactersSpaces()
                }
                return (status, headers)
            }
            try fill()
        }
    }

    private func readBody(_ headers: [String: String]) throws(ClientError) -> [UInt8] {
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var body: [UInt8] = []
            try readChunks { body += $0; return true }
            return body
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        guard length > 0 else { return [] }
        if buffer.count >= length {
            let body = Array(buffer[..<length])
            buffer.removeSubrange(..<length)
            return body
        }
        // The rest of the body goes straight from the socket into an array of its final size: no
        // zero-filling, no growing, no copy afterwards (a 3.4 MiB device list is one allocation).
        var failure: Int32 = 0
        let body = [UInt8](unsafeUninitializedCapacity: length) { out, count in
            buffer.withUnsafeBytes { have in
                if let from = have.baseAddress, have.count > 0 { UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: from, byteCount: have.count) }
            }
            count = buffer.count
            while count < length {
                let n = recv(fd, out.baseAddress! + count, length - count, 0)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { failure = n < 0 ? errno : -1; return }
                count += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
        if failure == EAGAIN || failure == EWOULDBLOCK {
            throw ClientError(message: "no answer from \(socketPath) within \(timeout) s", errno: failure)
        }
        guard failure == 0 else { throw ClientError(message: "passaged closed the connection in the middle of a \(length)-byte answer", errno: failure > 0 ? failure : nil) }
        return body
    }

    private func readChunks(_ each: ([UInt8]) -> Bool) throws(ClientError) {
        while true {
            var lineEnd = find([13, 10])
            while lineEnd == nil { try fill(); lineEnd = find([13, 10]) }
            let sizeText = String(decoding: buffer[..<lineEnd!], as: UTF8.self).split(separator: ";").first ?? ""
            buffer.removeSubrange(..<(lineEnd! + 2))
            guard let size = Int(sizeText.trimmingCharactersSpaces(), radix: 16) else { throw ClientError(message: "bad chunk from passaged") }
            while buffer.count < size + 2 { try fill() }
            let chunk = Array(buffer[..<size])
            buffer.removeSubrange(..<(size + 2))
            if size == 0 { return }
            if !each(chunk) { return }
        }
    }

    private func readResponse() throws(ClientError) -> Response {
        let (status, headers) = try readHead()
        let body = try readBody(headers)
        if headers["connection"]?.lowercased() == "close" { close() }
        return Response(status: status, headers: headers, body: body)
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        var i = 0
        while i <= buffer.count - pattern.count {
            if buffer[i] == pattern[0] && Array(buffer[i..<(i + pattern.count)]) == pattern { return i }
            i += 1
        }
        return nil
    }
}

extension Substring {
    func trimmingCharactersSpaces() -> String {
        var s = self
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" || s.last == "\r" { s.removeLast() }
        return String(s)
    }
}
