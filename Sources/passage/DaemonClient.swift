import ArgumentParser
import Foundation
import HostPCI
import PassageAPI

/// `--socket` for the commands that talk to passaged.
struct ClientOptions: ParsableArguments {
    static let defaultSocket = "/run/passage/passage.sock"

    @Option(name: .long, help: ArgumentHelp("passaged's socket (or $PASSAGE_SOCKET; default \(ClientOptions.defaultSocket)).", valueName: "PATH"))
    var socket: String?

    var path: String { socket ?? ProcessInfo.processInfo.environment["PASSAGE_SOCKET"] ?? Self.defaultSocket }
    /// The user named a socket: not finding the daemon there is an error, not a reason to work locally.
    var explicit: Bool { socket != nil || ProcessInfo.processInfo.environment["PASSAGE_SOCKET"] != nil }
    var client: DaemonClient { DaemonClient(socketPath: path) }
}

/// For commands that change the host: through passaged when it runs and manages the same sysfs
/// tree (so its store and event stream see every change, and its claims are respected), directly
/// on sysfs otherwise.
struct RouteOptions: ParsableArguments {
    @OptionGroup var daemon: ClientOptions

    @Flag(name: .long, help: "Change sysfs directly even when passaged runs (it notices on its next rescan or uevent).")
    var local = false

    /// The daemon to send the change to, or nil to make it here.
    func daemonClient(for root: SysfsRoot) throws(CLIError) -> DaemonClient? {
        if local { return nil }
        let c = daemon.client
        guard let health = c.health() else {
            if daemon.explicit {
                throw CLIError(code: "daemon-unavailable", message: "nothing answers on \(c.socketPath); start passaged, or leave out --socket/PASSAGE_SOCKET (or give --local) to change sysfs directly", exitCode: 69)
            }
            return nil
        }
        if let managed = health.sysfsRoot, Self.normalized(managed) != Self.normalized(root.path) {
            if daemon.explicit {
                throw CLIError.usage("passaged on \(c.socketPath) manages \(managed), not \(root.path); leave out --sysfs-root or --socket")
            }
            return nil
        }
        return c
    }

    static func normalized(_ p: String) -> String {
        var s = p
        while s.count > 1 && s.hasSuffix("/") { s.removeLast() }
        return s
    }
}

/// The CLI's side of the API: JSON requests on the Unix socket, API errors turned into CLI errors.
struct DaemonClient {
    let socketPath: String

    /// The daemon's health (also while it reconciles, answering 503), or nil when nothing answers.
    func health() -> HealthInfo? {
        guard FileManager.default.fileExists(atPath: socketPath),
              let r = try? UnixHTTPClient(socketPath: socketPath, timeout: 2).request("GET", "/v1/health") else { return nil }
        return try? JSONDecoder().decode(HealthInfo.self, from: Data(r.body))
    }

    /// Follows a long operation (`202` + operation resource) until it ends, handing each new
    /// progress line to `progress`; throws the operation's error if it failed.
    func follow(_ start: OperationInfo, progress: (String) -> Void) throws(CLIError) -> OperationInfo {
        var op = start
        var shown = 0
        while true {
            for line in op.progress.dropFirst(shown) { progress(line) }
            shown = op.progress.count
            if op.state != "running" { break }
            usleep(50_000)
            op = try get("/v1/operations/\(op.id)", as: OperationInfo.self)
        }
        if let e = op.error { throw CLIError(code: e.code, message: e.message, exitCode: e.code == "invalid-argument" ? 64 : 1) }
        return op
    }

    func get<T: Decodable>(_ path: String, as type: T.Type = T.self) throws(CLIError) -> T {
        try decode(try send("GET", path, nil))
    }

    func send<B: Encodable, T: Decodable>(_ method: String, _ path: String, body: B, as type: T.Type = T.self) throws(CLIError) -> T {
        let bytes: [UInt8]
        do { bytes = try StreamingJSONEncoder(pretty: false).encode(body) } catch { throw CLIError(code: "usage", message: "\(error)", exitCode: 64) }
        return try decode(try send(method, path, bytes))
    }

    /// A text answer (a VM's console), with the same error mapping as the JSON calls.
    func text(_ path: String) throws(CLIError) -> String {
        try send("GET", path, nil).text
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
