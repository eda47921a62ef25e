#if canImport(Glibc)
import Glibc
#endif

/// Why the HTTP server could not start or serve: a stable `code`, a message naming the socket and
/// the fix, and the underlying errno or error when there is one.
public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    /// `socket-path-too-long`, `socket-in-use`, `not-a-socket`, `socket-failed`, `bind-failed`,
    /// `chmod-failed`, `chown-failed`, `listen-failed`, `already-running`, `no-descriptor`.
    public var code: String
    public var message: String
    /// errno of the failing call, when a call failed.
    public var errno: Int32?

    public init(code: String, message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String {
        if let errno { return "\(message) (\(String(cString: strerror(errno))))" }
        return message
    }

    /// Reads errno at once; names the call and the path.
    static func call(_ name: String, code: String, path: String, fix: String = "") -> HTTPServerError {
        let e = Glibc.errno
        return HTTPServerError(code: code, message: "\(name)(\(path)) failed" + (fix.isEmpty ? "" : "; \(fix)"), errno: e)
    }
}
