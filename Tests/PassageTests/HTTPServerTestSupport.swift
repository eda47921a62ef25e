import Foundation
import Logging
@testable import PassageDaemon
import ServiceLifecycle
import Synchronization

// Helpers for HTTPServerTests: a test handler, a running server on a temp socket, curl, and a raw
// blocking socket client. All blocking I/O runs on its own thread (`offPool`), never on the
// cooperative pool the server's handler tasks need.

/// Runs blocking work on a fresh thread.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.start()
    }
}

struct EchoReply: Codable, Sendable {
    struct Peer: Codable, Sendable { var pid: Int32; var uid: UInt32; var gid: UInt32 }
    var method: String
    var path: String
    var query: [String: String]
    var headers: [String: String]
    var body: String
    var peer: Peer?
}

/// `/echo` (request as JSON), `/plain`, `/slow?ms=N`, `/stream` (chunks the test feeds).
final class TestHTTPHandler: HTTPHandler {
    let calls = Atomic<Int>(0)
    let streamContinuation = Mutex<AsyncStream<[UInt8]>.Continuation?>(nil)
    let streamTerminated = Atomic<Bool>(false)

    func handle(_ request: HTTPRequest) async -> HTTPResponse {
        calls.add(1, ordering: .relaxed)
        switch request.path {
        case "/echo":
            let reply = EchoReply(
                method: request.method, path: request.path, query: request.query, headers: request.headers,
                body: String(decoding: request.body, as: UTF8.self),
                peer: request.peer.map { .init(pid: $0.pid, uid: $0.uid, gid: $0.gid) })
            let data = try! JSONEncoder().encode(reply)
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .bytes(Array(data)))
        case "/slow":
            let ms = Int(request.query["ms"] ?? "500") ?? 500
            try? await Task.sleep(for: .milliseconds(ms))
            return HTTPResponse(status: 200, body: .bytes(Array("slow done".utf8)))
        case "/stream":
            let (stream, continuation) = AsyncStream.makeStream(of: [UInt8].self)
            continuation.onTermination = { [self] _ in self.streamTerminated.store(true, ordering: .relaxed) }
            streamContinuation.withLock { $0 = continuation }
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/x-ndjson")], body: .stream(stream))
        case "/plain":
            return HTTPResponse(status: 200, body: .bytes(Array("ok".utf8)))
        case "/big":  // far more than a Unix socket buffers
            return HTTPResponse(status: 200, body: .bytes([UInt8](repeating: UInt8(ascii: "x"), count: 16 << 20)))
        default:
            return HTTPResponse(status: 404, body: .bytes(HTTPErrorBody.json(code: "not-found", message: request.path)))
        }
    }

    func waitForStream() async throws -> AsyncStream<[UInt8]>.Continuation {
        for _ in 0..<500 {
            if let c = streamContinuation.withLock({ $0 }) { return c }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestSetupError("the stream handler was never called")
    }
}

final class RunningServer: Sendable {
    let server: UnixHTTPServer
    let handler: TestHTTPHandler
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let dir: String
    var path: String { dir + "/s.sock" }

    init(limits: HTTPLimits = .init(), mode: mode_t = 0o660) throws {
        var template = Array("/tmp/phttp-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestSetupError("mkdtemp failed") }
        dir = String(cString: made)
        handler = TestHTTPHandler()
        var logger = Logger(label: "test.http")
        logger.logLevel = .warning
        server = try UnixHTTPServer(socketPath: dir + "/s.sock", mode: mode, limits: limits, handler: handler, logger: logger)
        group = ServiceGroup(services: [server], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        task = Task { [group] in try await group.run() }
    }

    init(descriptor: Int32, dir: String, limits: HTTPLimits = .init()) {
        self.dir = dir
        handler = TestHTTPHandler()
        var logger = Logger(label: "test.http")
        logger.logLevel = .warning
        server = UnixHTTPServer(listeningDescriptor: descriptor, limits: limits, handler: handler, logger: logger)
        group = ServiceGroup(services: [server], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        task = Task { [group] in try await group.run() }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        try? FileManager.default.removeItem(atPath: dir)
    }
}

// MARK: curl

struct CurlResult: Sendable {
    var exitStatus: Int32
    var pid: Int32
    /// One (HTTP status, body) per URL.
    var responses: [(status: Int, body: String)]
    var stderr: String
}

/// `curl --unix-socket SOCKET ARGS… URLS…`; each URL's body is followed by its status.
func curl(_ socket: String, _ args: [String]) async throws -> CurlResult {
    try await offPool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-sS", "--unix-socket", socket, "-w", "\n@@%{http_code}@@\n"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let pid = p.processIdentifier
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        var responses: [(Int, String)] = []
        var rest = Substring(String(decoding: outData, as: UTF8.self))
        while let marker = rest.range(of: "\n@@") {
            let body = String(rest[..<marker.lowerBound])
            let after = rest[marker.upperBound...]
            guard let end = after.range(of: "@@\n") else { break }
            responses.append((Int(after[..<end.lowerBound]) ?? -1, body))
            rest = after[end.upperBound...]
        }
        return CurlResult(exitStatus: p.terminationStatus, pid: pid, responses: responses,
                          stderr: String(decoding: errData, as: UTF8.self))
    }
}

// MARK: raw client

struct RawResponse {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
    var chunks: [[UInt8]] = []
    var text: String { String(decoding: body, as: UTF8.self) }
    var errorCode: String? {
        struct E: Decodable { struct I: Decodable { var code: String; var message: String }; var error: I }
        return (try? JSONDecoder().decode(E.self, from: Data(body)))?.error.code
    }
}

/// A blocking Unix-socket client that writes exactly what a test says, for misbehaving clients.
final class RawClient: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8] = []
    /// Set once the server closed (EOF or reset).
    private(set) var closed = false

    init(_ path: String, timeout: Double = 5) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: \(errno)") }
        let rc = try UnixSocketListener.withSockaddr(path) { connect(fd, $0, $1) }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw TestSetupError("connect \(path): \(String(cString: strerror(e)))")
        }
        setTimeout(timeout)
    }

    deinit { Glibc.close(fd) }

    func setTimeout(_ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestSetupError("send: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    /// Reads more into the buffer; false on EOF, error or timeout.
    @discardableResult
    func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 {
            buffer.append(contentsOf: chunk[..<n])
            return true
        }
        if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { closed = true }
        return false
    }

    /// Whether bytes are ready to read within `ms`.
    func readable(ms: Int32) -> Bool {
        if !buffer.isEmpty { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, ms) > 0
    }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let l = buffer[..<i]
                buffer.removeSubrange(...i)
                return String(decoding: l.last == UInt8(ascii: "\r") ? l.dropLast() : l, as: UTF8.self)
            }
            guard fill() else { throw TestSetupError("connection ended inside a line (closed: \(closed))") }
        }
    }

    private func take(_ n: Int) throws -> [UInt8] {
        while buffer.count < n {
            guard fill() else { throw TestSetupError("connection ended inside a body") }
        }
        let out = Array(buffer[..<n])
        buffer.removeSubrange(..<n)
        return out
    }

    /// The status line and headers.
    func readHead() throws -> (status: Int, headers: [String: String]) {
        var status = 0
        repeat {
            let statusLine = try line()
            let parts = statusLine.split(separator: " ")
            guard parts.count >= 2, let s = Int(parts[1]) else { throw TestSetupError("bad status line \(statusLine)") }
            status = s
            var headers: [String: String] = [:]
            while true {
                let l = try line()
                if l.isEmpty { break }
                if let colon = l.firstIndex(of: ":") {
                    headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
            if status >= 200 || status < 100 { return (status, headers) }
        } while true
    }

    /// One chunk of a chunked body; empty at the end.
    func readChunk() throws -> [UInt8] {
        let sizeLine = try line()
        guard let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else {
            throw TestSetupError("bad chunk size \(sizeLine)")
        }
        let data = try take(size)
        _ = try line()
        return data
    }

    func readResponse() throws -> RawResponse {
        let (status, headers) = try readHead()
        if headers["transfer-encoding"] == "chunked" {
            var chunks: [[UInt8]] = []
            while true {
                let c = try readChunk()
                if c.isEmpty { break }
                chunks.append(c)
            }
            return RawResponse(status: status, headers: headers, body: chunks.flatMap { $0 }, chunks: chunks)
        }
        if let length = headers["content-length"].flatMap({ Int($0) }) {
            return RawResponse(status: status, headers: headers, body: try take(length))
        }
        while fill() {}
        defer { buffer.removeAll() }
        return RawResponse(status: status, headers: headers, body: buffer)
    }

    /// Reads until the server closes or `timeout` passes; returns whether it closed, and what came.
    func waitForClose(timeout: Double) -> (closed: Bool, bytes: [UInt8]) {
        let deadline = Date().addingTimeInterval(timeout)
        while !closed && Date() < deadline {
            setTimeout(max(0.01, deadline.timeIntervalSinceNow))
            fill()
        }
        defer { buffer.removeAll() }
        return (closed, buffer)
    }
}

func request(_ method: String, _ target: String, headers: [String] = [], body: String? = nil) -> String {
    var s = "\(method) \(target) HTTP/1.1\r\nHost: localhost\r\n"
    for h in headers { s += h + "\r\n" }
    if let body { s += "Content-Length: \(body.utf8.count)\r\n\r\n" + body } else { s += "\r\n" }
    return s
}
