import NIOCore

/// The daemon's HTTP layer, as the API routes see it: a parsed request (with the peer's
/// credentials from SO_PEERCRED; HTTPRequest.swift) in, a response out. The server
/// (UnixHTTPServer) owns sockets, HTTP/1.1 parsing, limits and timeouts; the routes own meaning.

public struct HTTPResponse: Sendable {
    public enum Body: Sendable {
        case bytes([UInt8])
        /// Sent as is, without a copy (a cached body shared by many responses).
        case buffer(ByteBuffer)
        /// Written as chunks as they come (newline-delimited JSON event streams); ends when the stream ends
        /// or the client goes away.
        case stream(AsyncStream<[UInt8]>)
    }

    public var status: Int
    public var headers: [(String, String)]
    public var body: Body

    public init(status: Int, headers: [(String, String)] = [], body: Body = .bytes([])) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// What the server calls for each request. Must not block: long work goes to tasks.
public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest) async -> HTTPResponse
}

/// Bounds that keep one slow, silent or greedy client from hurting the others.
public struct HTTPLimits: Sendable {
    /// Largest request body accepted; larger → 413 with a JSON error, connection closed.
    public var maxBodyBytes: Int = 64 * 1024
    /// Largest request head (request line + headers); larger → 431.
    public var maxHeaderBytes: Int = 16 * 1024
    /// Time to receive a whole request head (and body) after the connection opened or the previous
    /// response was sent; slower → 408 and close.
    public var requestTimeout: Double = 5
    /// An idle keep-alive connection is closed after this long.
    public var idleTimeout: Double = 60
    /// A response (or one chunk of an event stream) the client has not read within this long
    /// closes the connection: a client that stops reading cannot pin a slot and its buffers.
    public var writeTimeout: Double = 30
    /// Connections beyond this many are answered 503 and closed at once.
    public var maxConnections: Int = 256

    public init() {}
}
