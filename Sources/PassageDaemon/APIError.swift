import HostPCI
import PassageAPI
import SRIOV

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

    /// Maps the library errors to statuses.
    public init(_ error: any Error) {
        switch error {
        case let e as APIError: self = e
        case let e as HostPCIError:
            let status = switch e.code {
            case .invalidAddress, .invalidArgument: 400
            case .deviceNotFound: 404
            case .groupNotViable, .deviceInUse, .driverNotFound: 409
            case .sysfsUnavailable: 503
            case .io, .bindFailed: 500
            }
            self.init(status, e.code.rawValue, e.message)
        case let e as SRIOVError:
            let status = switch e.code {
            case .invalidArgument: 400
            case .notFound: 404
            case .notSRIOV, .tooManyVFs, .vfsInUse, .noResources: 409
            case .timeout: 504
            default: 500
            }
            self.init(status, e.code.rawValue, e.message)
        case let e as StoreError:
            self.init(500, "store-error", e.message)
        default:
            self.init(500, "internal-error", "\(error)")
        }
    }
}
