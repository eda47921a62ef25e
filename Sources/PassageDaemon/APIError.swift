// Imports conditional so that the fuzz target api-request (scripts/fuzz.sh) can compile this file
// with the request decoding alone (PassageAPI's and HostPCI's sources in the same module there).
#if canImport(HostPCI)
import HostPCI
#endif
#if canImport(PassageAPI)
import PassageAPI
#endif

/// An error as the API returns it: an HTTP status, a stable code, and a message that names the
/// device and the fix.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String

    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status) \(code): \(message)" }

    public var info: ErrorInfo { ErrorInfo(code: code, message: message) }

    static func badRequest(_ m: String) -> APIError { APIError(400, "bad-request", m) }
    static func notFound(_ m: String) -> APIError { APIError(404, "not-found", m) }

    /// A HostPCI error (a malformed PCI address in a path, say) as the API returns it.
    init(_ e: HostPCIError) {
        let status = switch e.code {
        case .invalidAddress, .invalidArgument: 400
        case .deviceNotFound: 404
        case .groupNotViable, .deviceInUse, .driverNotFound: 409
        case .sysfsUnavailable: 503
        case .io, .bindFailed: 500
        }
        self.init(status, e.code.rawValue, e.message)
    }
}
