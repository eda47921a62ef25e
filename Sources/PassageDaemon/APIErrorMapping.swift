import HostPCI
import SRIOV

extension APIError {
    /// Maps the library errors to statuses.
    public init(_ error: any Error) {
        switch error {
        case let e as APIError: self = e
        case let e as HostPCIError:
            self.init(e)
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
