import ArgumentParser
import Foundation
import HostPCI
import PassageAPI
import SRIOV

/// An error the CLI reports, with its exit status.
///
/// Exit statuses: 1 operation failed, 64 usage (bad arguments or address), 66 no such device,
/// 69 sysfs (or the daemon, later) unavailable.
struct CLIError: Error {
    var code: String
    var message: String
    var exitCode: Int32

    static func usage(_ message: String) -> CLIError { CLIError(code: "usage", message: message, exitCode: 64) }

    init(code: String, message: String, exitCode: Int32) {
        self.code = code
        self.message = message
        self.exitCode = exitCode
    }

    init(_ e: HostPCIError) {
        let status: Int32 = switch e.code {
        case .invalidAddress, .invalidArgument: 64
        case .deviceNotFound: 66
        case .sysfsUnavailable: 69
        case .io, .driverNotFound, .bindFailed, .groupNotViable, .deviceInUse: 1
        }
        self.init(code: e.code.rawValue, message: e.message, exitCode: status)
    }
}

/// Runs a command body, turning errors into a message on stderr (JSON with `--json`) and an exit status.
func reportingErrors(json: Bool, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as CLIError {
        emit(e, json: json)
        throw ExitCode(e.exitCode)
    } catch let e as HostPCIError {
        let c = CLIError(e)
        emit(c, json: json)
        throw ExitCode(c.exitCode)
    } catch let e as SRIOVError {
        let c = CLIError(code: e.code.rawValue, message: e.message,
                         exitCode: e.code == .invalidArgument ? 64 : e.code == .notFound ? 66 : 1)
        emit(c, json: json)
        throw ExitCode(c.exitCode)
    }
}

private func emit(_ e: CLIError, json: Bool) {
    let text: String
    if json, let bytes = try? StreamingJSONEncoder(pretty: false).encode(["error": ErrorInfo(code: e.code, message: e.message)]) {
        text = String(decoding: bytes, as: UTF8.self)
    } else {
        text = "passage: error: \(e.message)"
    }
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Parses the addresses a command was given; at least one.
func parseAddresses(_ texts: [String]) throws(CLIError) -> [PCIAddress] {
    guard !texts.isEmpty else { throw CLIError.usage("name at least one device address") }
    return try texts.map { (s) throws(CLIError) in try parseAddress(s) }
}

/// Parses a user-typed address for a command argument.
func parseAddress(_ text: String) throws(CLIError) -> PCIAddress {
    do { return try PCIAddress(parsing: text) } catch { throw CLIError(error) }
}
