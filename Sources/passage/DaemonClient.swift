import ArgumentParser
import Foundation
import PassageAPI

/// `--socket` for the commands that talk to passaged.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("passaged's socket (or $PASSAGE_SOCKET).", valueName: "PATH"))
    var socket: String = ProcessInfo.processInfo.environment["PASSAGE_SOCKET"] ?? "/run/passage/passage.sock"

    var client: DaemonClient { DaemonClient(socketPath: socket) }
}

/// The CLI's side of the API: JSON requests on the Unix socket, API errors turned into CLI errors.
struct DaemonClient {
    let socketPath: String

    /// True when something accepts connections on the socket (the daemon is running).
    var reachable: Bool {
        guard FileManager.default.fileExists(atPath: socketPath) else { return false }
        return (try? UnixHTTPClient(socketPath: socketPath, timeout: 2).request("GET", "/v1/health")) != nil
    }

    func get<T: Decodable>(_ path: String, as type: T.Type = T.self) throws(CLIError) -> T {
        try decode(try send("GET", path, nil))
    }

    func send<B: Encodable, T: Decodable>(_ method: String, _ path: String, body: B, as type: T.Type = T.self) throws(CLIError) -> T {
        let bytes: [UInt8]
        do { bytes = try StreamingJSONEncoder(pretty: false).encode(body) } catch { throw CLIError(code: "usage", message: "\(error)", exitCode: 64) }
        return try decode(try send(method, path, bytes))
    }

    func delete<T: Decodable>(_ path: String, as type: T.Type = T.self) throws(CLIError) -> T {
        try decode(try send("DELETE", path, nil))
    }

    /// Follows a newline-delimited JSON stream until it ends or `line` returns false.
    func stream(_ path: String, line: (String) -> Bool) throws(CLIError) {
        do { try UnixHTTPClient(socketPath: socketPath, timeout: 86_400 * 365).stream(path, line: line) } catch {
            throw Self.unreachable(socketPath, error)
        }
    }

    private func send(_ method: String, _ path: String, _ body: [UInt8]?) throws(CLIError) -> UnixHTTPClient.Response {
        let response: UnixHTTPClient.Response
        do { response = try UnixHTTPClient(socketPath: socketPath).request(method, path, body: body) } catch {
            throw Self.unreachable(socketPath, error)
        }
        guard (200..<300).contains(response.status) else {
            let info = (try? JSONDecoder().decode([String: ErrorInfo].self, from: Data(response.body)))?["error"]
                ?? ErrorInfo(code: "http-\(response.status)", message: response.text)
            let exit: Int32 = switch response.status {
            case 400, 405, 413, 431: 64
            case 404: 66
            case 403: 77
            case 503: 69
            default: 1
            }
            throw CLIError(code: info.code, message: info.message, exitCode: exit)
        }
        return response
    }

    private func decode<T: Decodable>(_ r: UnixHTTPClient.Response) throws(CLIError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(r.body)) } catch {
            throw CLIError(code: "bad-response", message: "passaged answered with something this passage cannot read (\(error)); are both the same version?", exitCode: 1)
        }
    }

    static func unreachable(_ path: String, _ error: UnixHTTPClient.ClientError) -> CLIError {
        CLIError(code: "daemon-unavailable", message: "\(error.message)", exitCode: 69)
    }
}
