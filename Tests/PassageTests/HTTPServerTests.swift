import Foundation
import Logging
@testable import PassageDaemon
import Testing

/// UnixHTTPServer on real Unix sockets, driven by curl and by raw sockets for misbehaving clients.
/// Serialized: several tests measure timeouts, and the machine has two cores.
@Suite(.serialized)
struct HTTPServerTests {
    static func short(request: Double = 1, idle: Double = 5, maxConnections: Int = 256) -> HTTPLimits {
        var l = HTTPLimits()
        l.requestTimeout = request
        l.idleTimeout = idle
        l.maxConnections = maxConnections
        return l
    }

    /// Runs `body` against a fresh server and always stops it.
    func withServer(_ limits: HTTPLimits = .init(), _ body: (RunningServer) async throws -> Void) async throws {
        let s = try RunningServer(limits: limits)
        do {
            try await body(s)
        } catch {
            await s.stop()
            throw error
        }
        await s.stop()
    }

    // MARK: requests through curl

    @Test func getWithQueryAndPeerCredentialsFromCurl() async throws {
        try await withServer { s in
            let r = try await curl(s.path, ["http://localhost/echo?name=a%20b&x=1&x=2&plus=c+d&flag&utf=%C3%A9"])
            #expect(r.exitStatus == 0, "\(r.stderr)")
            let (status, body) = try #require(r.responses.first)
            #expect(status == 200)
            let echo = try JSONDecoder().decode(EchoReply.self, from: Data(body.utf8))
            #expect(echo.method == "GET")
            #expect(echo.path == "/echo")
            #expect(echo.query == ["name": "a b", "x": "2", "plus": "c d", "flag": "", "utf": "é"])
            #expect(echo.headers["host"] == "localhost")
            #expect(echo.headers["user-agent"]?.hasPrefix("curl/") == true)
            let peer = try #require(echo.peer)
            #expect(peer.pid == r.pid)
            #expect(peer.uid == getuid())
            #expect(peer.gid == getgid())
        }
    }

    @Test func postJSONBodyIsEchoed() async throws {
        try await withServer { s in
            let json = #"{"owner":"test","devices":["0000:01:00.1"]}"#
            let r = try await curl(s.path, ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", json,
                                            "http://localhost/echo"])
            let (status, body) = try #require(r.responses.first)
            #expect(status == 200)
            let echo = try JSONDecoder().decode(EchoReply.self, from: Data(body.utf8))
            #expect(echo.method == "POST")
            #expect(echo.body == json)
            #expect(echo.headers["content-type"] == "application/json")
            #expect(echo.headers["content-length"] == String(json.utf8.count))
        }
    }

    @Test func expectContinueIsAnsweredAtOnce() async throws {
        // curl waits a second for the 100 before sending the body.
        try await withServer { s in
            let body = String(repeating: "x", count: 4000)
            let start = Date()
            let r = try await curl(s.path, ["-H", "Expect: 100-continue", "--data-binary", body, "http://localhost/echo"])
            let elapsed = Date().timeIntervalSince(start)
            let (status, reply) = try #require(r.responses.first)
            #expect(status == 200)
            let echo = try JSONDecoder().decode(EchoReply.self, from: Data(reply.utf8))
            #expect(echo.body == body)
            #expect(echo.headers["expect"] == "100-continue")
            #expect(elapsed < 0.9, "took \(elapsed)s: the 100 Continue did not come")
        }
    }

    @Test func keepAliveServesTwoRequestsOnOneConnection() async throws {
        try await withServer { s in
            let before = s.server.metrics.snapshot().acceptedConnections
            let r = try await curl(s.path, ["http://localhost/echo?n=1", "http://localhost/echo?n=2"])
            #expect(r.responses.map(\.status) == [200, 200])
            let n = try r.responses.map { try JSONDecoder().decode(EchoReply.self, from: Data($0.body.utf8)).query["n"] }
            #expect(n == ["1", "2"])
            #expect(s.server.metrics.snapshot().acceptedConnections - before == 1)
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withServer { s in
            let responses = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                // The first is slow: the second must wait for it, not overtake it.
                try c.send(request("GET", "/slow?ms=200") + request("GET", "/echo?n=2") + request("GET", "/plain"))
                return try (0..<3).map { _ in try c.readResponse() }
            }
            #expect(responses.map(\.status) == [200, 200, 200])
            #expect(responses[0].text == "slow done")
            #expect(responses[1].text.contains(#""n":"2""#))
            #expect(responses[2].text == "ok")
        }
    }

    @Test func chunkedRequestBody() async throws {
        try await withServer { s in
            let body = String(repeating: "0123456789abcdef", count: 1000)  // 16,000 bytes
            let file = s.dir + "/body"
            try body.write(toFile: file, atomically: true, encoding: .utf8)
            let r = try await curl(s.path, ["-H", "Transfer-Encoding: chunked", "--data-binary", "@" + file,
                                            "http://localhost/echo"])
            let (status, reply) = try #require(r.responses.first)
            #expect(status == 200)
            let echo = try JSONDecoder().decode(EchoReply.self, from: Data(reply.utf8))
            #expect(echo.headers["transfer-encoding"] == "chunked")
            #expect(echo.body == body)

            // And by hand, chunks of odd sizes with an extension.
            let raw = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
                return try c.readResponse()
            }
            #expect(try JSONDecoder().decode(EchoReply.self, from: Data(raw.body)).body == "hello world")
        }
    }

    // MARK: limits

    @Test func bodyOverTheLimitIs413AndNeverReachesTheHandler() async throws {
        try await withServer { s in
            let big = [UInt8](repeating: UInt8(ascii: "a"), count: 70_000)
            // Content-Length over the limit, body sent anyway.
            let (r1, closed1) = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
                try? c.send(big)
                let r = try c.readResponse()
                return (r, c.waitForClose(timeout: 3).closed)
            }
            #expect(r1.status == 413)
            #expect(r1.errorCode == "body-too-large")
            #expect(r1.headers["connection"] == "close")
            #expect(closed1)
            // Chunked, growing past the limit.
            let (r2, closed2) = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                let chunk = "4000\r\n" + String(repeating: "b", count: 0x4000) + "\r\n"
                for _ in 0..<5 { try? c.send(chunk) }
                let r = try c.readResponse()
                return (r, c.waitForClose(timeout: 3).closed)
            }
            #expect(r2.status == 413)
            #expect(r2.errorCode == "body-too-large")
            #expect(closed2)
            // curl, which waits for 100-continue first.
            let file = s.dir + "/big"
            try Data(big).write(to: URL(fileURLWithPath: file))
            let r3 = try await curl(s.path, ["--data-binary", "@" + file, "http://localhost/echo"])
            #expect(r3.responses.first?.status == 413)
            #expect(s.handler.calls.load(ordering: .relaxed) == 0)
            #expect(s.server.metrics.snapshot().bodyTooLarge == 3)
            // Exactly the limit is fine.
            let exact = String(repeating: "c", count: 64 * 1024)
            let ok = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try c.send(request("POST", "/echo", body: exact))
                return try c.readResponse()
            }
            #expect(ok.status == 200)
        }
    }

    @Test func headerOverTheLimitIs431() async throws {
        try await withServer { s in
            for size in [20_000, 200_000] {
                let r = try await offPool { [path = s.path] in
                    let c = try RawClient(path)
                    try? c.send(request("GET", "/echo", headers: ["X-Big: " + String(repeating: "h", count: size)]))
                    return try c.readResponse()
                }
                #expect(r.status == 431, "header of \(size) bytes")
                #expect(r.errorCode == "header-too-large")
            }
            // A long URL counts too.
            let r = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try? c.send(request("GET", "/echo?q=" + String(repeating: "u", count: 20_000)))
                return try c.readResponse()
            }
            #expect(r.status == 431)
            #expect(s.handler.calls.load(ordering: .relaxed) == 0)
        }
    }

    @Test func silentClientIsClosedAfterTheTimeoutWhileOthersAreServed() async throws {
        try await withServer(Self.short(request: 0.6)) { s in
            let start = Date()
            let silent = try RawClient(s.path)
            // Meanwhile, others are served at once.
            for _ in 0..<3 {
                let r = try await curl(s.path, ["http://localhost/plain"])
                #expect(r.responses.first?.status == 200)
            }
            let servedOthersAfter = Date().timeIntervalSince(start)
            let (response, closed) = try await offPool {
                let r = try silent.readResponse()
                return (r, silent.waitForClose(timeout: 3).closed)
            }
            let elapsed = Date().timeIntervalSince(start)
            #expect(response.status == 408)
            #expect(response.errorCode == "request-timeout")
            #expect(closed)
            #expect(elapsed >= 0.5 && elapsed < 4, "closed after \(elapsed)s")
            #expect(servedOthersAfter < elapsed)
            #expect(s.server.metrics.snapshot().requestTimeouts == 1)
        }
    }

    @Test func clientThatStopsReadingIsClosedAfterTheWriteTimeout() async throws {
        var limits = Self.short()
        limits.writeTimeout = 0.5
        try await withServer(limits) { s in
            let start = Date()
            let stuck = try RawClient(s.path)
            try stuck.send(request("GET", "/big"))
            // It never reads; others are served meanwhile.
            for _ in 0..<3 {
                #expect(try await curl(s.path, ["http://localhost/plain"]).responses.first?.status == 200)
            }
            try await Task.sleep(for: .milliseconds(1500))
            #expect(s.server.metrics.snapshot().writeTimeouts == 1)
            // What it reads now is a cut-off response followed by the close.
            let (closed, bytes) = try await offPool { stuck.waitForClose(timeout: 5) }
            #expect(closed)
            #expect(bytes.count < 16 << 20, "the whole 16 MiB arrived: the connection was not cut")
            #expect(Date().timeIntervalSince(start) < 10)
        }
    }

    @Test func slowClientOneBytePer100msGets408() async throws {
        try await withServer(Self.short(request: 1)) { s in
            let (status, code, elapsed) = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                let bytes = Array(request("GET", "/echo", headers: ["X-Pad: " + String(repeating: "p", count: 60)]).utf8)
                let start = Date()
                for b in bytes {
                    try? c.send([b])
                    if c.readable(ms: 100) { break }
                }
                let r = try c.readResponse()
                return (r.status, r.errorCode, Date().timeIntervalSince(start))
            }
            #expect(status == 408)
            #expect(code == "request-timeout")
            #expect(elapsed >= 0.9 && elapsed < 4, "408 after \(elapsed)s")
            #expect(s.handler.calls.load(ordering: .relaxed) == 0)
        }
    }

    @Test func idleKeepAliveConnectionIsClosed() async throws {
        try await withServer(Self.short(request: 5, idle: 0.4)) { s in
            let (status, closed, bytes, elapsed) = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try c.send(request("GET", "/plain"))
                let r = try c.readResponse()
                let start = Date()
                let (closed, bytes) = c.waitForClose(timeout: 3)
                return (r.status, closed, bytes, Date().timeIntervalSince(start))
            }
            #expect(status == 200)
            #expect(closed)
            #expect(bytes.isEmpty)
            #expect(elapsed >= 0.3 && elapsed < 4, "closed after \(elapsed)s")
            #expect(s.server.metrics.snapshot().idleTimeouts == 1)
        }
    }

    @Test func connectionsBeyondTheMaximumGet503() async throws {
        try await withServer(Self.short(request: 5, maxConnections: 2)) { s in
            let path = s.path
            let (a, b) = try await offPool {
                let a = try RawClient(path), b = try RawClient(path)
                for c in [a, b] {
                    try c.send(request("GET", "/plain"))
                    _ = try c.readResponse()
                }
                return (a, b)
            }
            let (third, closed) = try await offPool {
                let c = try RawClient(path)
                let r = try c.readResponse()
                return (r, c.waitForClose(timeout: 3).closed)
            }
            #expect(third.status == 503)
            #expect(third.errorCode == "too-many-connections")
            #expect(closed)
            #expect(s.server.metrics.snapshot().rejectedConnections == 1)
            #expect(s.server.metrics.snapshot().openConnections == 2)
            // The open ones still work; once one closes, a new connection is admitted.
            let again = try await offPool {
                try a.send(request("GET", "/plain"))
                return try a.readResponse().status
            }
            #expect(again == 200)
            _ = b
            Glibc.shutdown(b.fd, Int32(SHUT_RDWR))
            var admitted = false
            for _ in 0..<50 where !admitted {
                try await Task.sleep(for: .milliseconds(20))
                admitted = try await offPool {
                    let c = try RawClient(path)
                    try c.send(request("GET", "/plain"))
                    return (try? c.readResponse().status) == 200
                }
            }
            #expect(admitted)
        }
    }

    @Test func malformedRequestsAre400() async throws {
        try await withServer { s in
            let bad = [
                "GARBAGE\r\n\r\n",
                "GET /x HTTP/9.9.9\r\nHost: x\r\n\r\n",
                "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
                "GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
                "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            ]
            for text in bad {
                let (r, closed) = try await offPool { [path = s.path] in
                    let c = try RawClient(path)
                    try? c.send(text)
                    let r = try c.readResponse()
                    return (r, c.waitForClose(timeout: 3).closed)
                }
                #expect(r.status == 400, "\(text.debugDescription)")
                #expect(r.errorCode == "bad-request")
                #expect(closed)
            }
            #expect(s.handler.calls.load(ordering: .relaxed) == 0)
            #expect(s.server.metrics.snapshot().malformedRequests == bad.count)
        }
    }

    @Test func halfClosedClientAndHTTP10GetTheirResponsesThenClose() async throws {
        try await withServer { s in
            let path = s.path
            // Request, then shutdown(SHUT_WR), as `nc -N` does.
            let (r1, closed1) = try await offPool {
                let c = try RawClient(path)
                try c.send(request("GET", "/slow?ms=100"))
                Glibc.shutdown(c.fd, Int32(SHUT_WR))
                let r = try c.readResponse()
                return (r, c.waitForClose(timeout: 3).closed)
            }
            #expect(r1.status == 200)
            #expect(r1.text == "slow done")
            #expect(closed1)
            // HTTP/1.0 without keep-alive: the connection ends after the response.
            let (r2, closed2) = try await offPool {
                let c = try RawClient(path)
                try c.send("GET /plain HTTP/1.0\r\n\r\n")
                let r = try c.readResponse()
                return (r, c.waitForClose(timeout: 3).closed)
            }
            #expect(r2.status == 200)
            #expect(r2.text == "ok")
            #expect(closed2)
            // HEAD: the length of the body, but no body.
            let r3 = try await offPool {
                let c = try RawClient(path)
                try c.send(request("HEAD", "/plain") + request("GET", "/plain"))
                let head = try c.readHead()
                return (head, try c.readResponse())
            }
            #expect(r3.0.status == 200 && r3.0.headers["content-length"] == "2")
            #expect(r3.1.text == "ok")
        }
    }

    @Test func unknownMethodsReachTheHandler() async throws {
        try await withServer { s in
            let r = try await curl(s.path, ["-X", "PATCH", "http://localhost/echo"])
            #expect(r.responses.first?.status == 200)
            #expect(r.responses.first?.body.contains(#""method":"PATCH""#) == true)
        }
    }

    @Test func peerCredentialsOfARawClientAreTheTestProcess() async throws {
        try await withServer { s in
            let r = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                try c.send(request("GET", "/echo"))
                return try c.readResponse()
            }
            let peer = try #require(try JSONDecoder().decode(EchoReply.self, from: Data(r.body)).peer)
            #expect(peer.pid == getpid())
            #expect(peer.uid == getuid())
            #expect(peer.gid == getgid())
        }
    }

    // MARK: streaming

    @Test func streamingResponseArrivesIncrementally() async throws {
        try await withServer { s in
            let c = try RawClient(s.path)
            try c.send(request("GET", "/stream"))
            let continuation = try await s.handler.waitForStream()
            continuation.yield(Array("{\"event\":1}\n".utf8))
            let (head, first) = try await offPool { (try c.readHead(), try c.readChunk()) }
            #expect(head.status == 200)
            #expect(head.headers["transfer-encoding"] == "chunked")
            #expect(head.headers["content-type"] == "application/x-ndjson")
            #expect(String(decoding: first, as: UTF8.self) == "{\"event\":1}\n")
            // Nothing more until the producer yields.
            #expect(try await offPool { c.readable(ms: 200) } == false)
            continuation.yield(Array("{\"event\":2}\n".utf8))
            continuation.finish()
            let (second, end) = try await offPool { (try c.readChunk(), try c.readChunk()) }
            #expect(String(decoding: second, as: UTF8.self) == "{\"event\":2}\n")
            #expect(end.isEmpty)
            // The connection is still good for another request.
            let next = try await offPool {
                try c.send(request("GET", "/plain"))
                return try c.readResponse().text
            }
            #expect(next == "ok")
        }
    }

    @Test func clientDisconnectEndsTheStreamProducer() async throws {
        try await withServer { s in
            var c: RawClient? = try RawClient(s.path)
            try c!.send(request("GET", "/stream"))
            let continuation = try await s.handler.waitForStream()
            continuation.yield(Array("x\n".utf8))
            _ = try await offPool { [c] in (try c!.readHead(), try c!.readChunk()) }
            c = nil  // closes the socket
            var terminated = false
            for _ in 0..<200 where !terminated {
                try await Task.sleep(for: .milliseconds(10))
                terminated = s.handler.streamTerminated.load(ordering: .relaxed)
            }
            #expect(terminated)
        }
    }

    // MARK: lifecycle

    @Test func gracefulShutdownFinishesTheRequestInFlight() async throws {
        let s = try RunningServer()
        let path = s.path
        async let slow = curl(path, ["-i", "http://localhost/slow?ms=600"])
        while s.handler.calls.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let idle = try RawClient(path)  // an idle connection does not hold shutdown up
        let start = Date()
        await s.group.triggerGracefulShutdown()
        let r = try await slow
        #expect(r.responses.first?.status == 200)
        #expect(r.responses.first?.body.hasSuffix("slow done") == true)
        #expect(r.responses.first?.body.lowercased().contains("connection: close") == true)
        try await s.task.value
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(try await offPool { idle.waitForClose(timeout: 1).closed })
        #expect(!FileManager.default.fileExists(atPath: path), "socket file left behind")
        #expect(throws: (any Error).self) { try RawClient(path) }
        try? FileManager.default.removeItem(atPath: s.dir)
    }

    @Test func cancellationClosesEverythingAtOnce() async throws {
        let s = try RunningServer()
        let path = s.path
        async let slow = curl(path, ["http://localhost/slow?ms=5000"])
        while s.handler.calls.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let start = Date()
        s.task.cancel()
        _ = try? await s.task.value
        let r = try await slow
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(r.exitStatus != 0, "curl got \(r.responses)")
        #expect(!FileManager.default.fileExists(atPath: path))
        try? FileManager.default.removeItem(atPath: s.dir)
    }

    @Test func staleSocketIsReplacedButALiveOneIsNot() async throws {
        let s = try RunningServer(mode: 0o600)
        var st = stat()
        #expect(stat(s.path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        var logger = Logger(label: "t")
        logger.logLevel = .critical
        #expect {
            _ = try UnixHTTPServer(socketPath: s.path, handler: TestHTTPHandler(), logger: logger)
        } throws: { ($0 as? HTTPServerError)?.code == "socket-in-use" }
        await s.stop()

        // A socket file nobody listens on (a daemon that was killed).
        var template = Array("/tmp/phttp-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stale = dir + "/stale.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(try UnixSocketListener.withSockaddr(stale) { bind(fd, $0, $1) } == 0)
        close(fd)
        #expect(FileManager.default.fileExists(atPath: stale))
        let replaced = try UnixHTTPServer(socketPath: stale, handler: TestHTTPHandler(), logger: logger)
        #expect(stat(stale, &st) == 0 && st.st_mode & 0o777 == 0o660)
        _ = replaced

        // A regular file is never removed.
        let regular = dir + "/file"
        _ = FileManager.default.createFile(atPath: regular, contents: Data("keep".utf8))
        #expect {
            _ = try UnixHTTPServer(socketPath: regular, handler: TestHTTPHandler(), logger: logger)
        } throws: { ($0 as? HTTPServerError)?.code == "not-a-socket" }
        #expect(FileManager.default.contents(atPath: regular) == Data("keep".utf8))
    }

    @Test func servesOnAPassedListeningDescriptor() async throws {
        var template = Array("/tmp/phttp-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        let bound = try UnixSocketListener.bind(path: dir + "/act.sock", mode: 0o600, group: nil, backlog: 16)
        let s = RunningServer(descriptor: bound.fd, dir: dir)
        let r = try await curl(dir + "/act.sock", ["http://localhost/plain"])
        #expect(r.responses.first?.status == 200)
        await s.stop()
    }

    @Test func systemdDescriptorNeedsOurPid() {
        setenv("LISTEN_PID", String(getpid() + 1), 1)
        setenv("LISTEN_FDS", "1", 1)
        #expect(UnixHTTPServer.systemdListenDescriptor() == nil)
        #expect(getenv("LISTEN_PID") == nil && getenv("LISTEN_FDS") == nil)
        unsetenv("LISTEN_PID")
        #expect(UnixHTTPServer.systemdListenDescriptor() == nil)
    }

    // MARK: parsing and metrics

    @Test func requestTargetParsing() {
        let t = HTTPRequestTarget("/v1/devices/0000:01:00.0?class=02&driver=none&x=1&x=%32&s=a+b%2Bc&bad=%zz%4&flag")
        #expect(t.path == "/v1/devices/0000:01:00.0")
        #expect(t.query == ["class": "02", "driver": "none", "x": "2", "s": "a b+c", "bad": "%zz%4", "flag": ""])
        #expect(HTTPRequestTarget("http://localhost/v1/health?a=1") == HTTPRequestTarget("/v1/health?a=1"))
        #expect(HTTPRequestTarget("http://localhost").path == "/")
        #expect(HTTPRequestTarget("/p%20q").path == "/p%20q")
        #expect(HTTPRequestTarget("/a#frag").path == "/a")
    }

    @Test func metricsInPrometheusFormat() async throws {
        try await withServer { s in
            _ = try await curl(s.path, ["http://localhost/plain", "http://localhost/nope"])
            let text = s.server.metrics.prometheusText()
            #expect(text.contains("passage_http_responses_total{code=\"2xx\"} 1\n"))
            #expect(text.contains("passage_http_responses_total{code=\"4xx\"} 1\n"))
            #expect(text.contains("# TYPE passage_http_connections_open gauge\n"))
            #expect(text.contains("passage_http_connections_accepted_total 1\n"))
        }
    }

    @Test func requestRateOverOneKeepAliveConnection() async throws {
        try await withServer { s in
            let n = 2000
            let (elapsed, ok) = try await offPool { [path = s.path] in
                let c = try RawClient(path)
                let req = request("GET", "/plain")
                var ok = 0
                let start = Date()
                for _ in 0..<n {
                    try c.send(req)
                    if try c.readResponse().status == 200 { ok += 1 }
                }
                return (Date().timeIntervalSince(start), ok)
            }
            #expect(ok == n)
            print("HTTPServer: \(n) sequential requests on one keep-alive connection in \(String(format: "%.3f", elapsed)) s = \(Int(Double(n) / elapsed)) req/s, \(String(format: "%.1f", elapsed / Double(n) * 1e6)) µs each")
        }
    }
}
