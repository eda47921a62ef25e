// No NIO here: the fuzz target api-request (scripts/fuzz.sh) compiles this file without the
// daemon's other sources.

/// Who is on the other end of the Unix socket (SO_PEERCRED).
public struct PeerCredentials: Sendable, Hashable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query, percent-decoding not applied (`/v1/devices/0000:01:00.0`).
    public var path: String
    /// Query parameters, decoded (`?class=02&driver=none`); the last value wins for repeated keys.
    public var query: [String: String]
    /// Header names lowercased.
    public var headers: [String: String]
    public var body: [UInt8]
    public var peer: PeerCredentials?

    public init(method: String, path: String, query: [String: String] = [:], headers: [String: String] = [:],
                body: [UInt8] = [], peer: PeerCredentials? = nil) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.peer = peer
    }
}

extension HTTPRequest {
    /// The request as the server hands it to the handler, from the request line's method and
    /// target and the header fields as they came: the target split into path and decoded query
    /// (HTTPRequestTarget), header names lowercased, repeated headers joined with ", ".
    init(method: String, uri: String, headerFields: some Sequence<(name: String, value: String)>, body: [UInt8],
         peer: PeerCredentials?) {
        var headers: [String: String] = [:]
        for (name, value) in headerFields {
            let key = name.lowercased()
            if let existing = headers[key] {
                headers[key] = existing + ", " + value
            } else {
                headers[key] = value
            }
        }
        let target = HTTPRequestTarget(uri)
        self.init(method: method, path: target.path, query: target.query, headers: headers, body: body, peer: peer)
    }
}
