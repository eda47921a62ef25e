// libFuzzer target: the daemon's API request handling, from the request line to a routed,
// decoded call — HTTPRequest.swift (target split, query percent-decoding, header folding),
// APICall.swift (route matching, path parameters, strict JSON body decoding with unknown-key
// refusal), DeviceQuery.swift and the request types of PassageAPI.
//
// The input is a raw HTTP/1.1 request (request line, header lines, blank line, body). In the
// daemon NIO's HTTP parser (llhttp) splits it; that parser is not Passage's and is not linked here,
// so `split` below stands in for it (the bytes it refuses the server answers 400 without reaching
// Passage's code). What it hands on goes through the same code the server runs.
//
// Invariants: no trap; every request either routes and decodes or yields an APIError of status
// 4xx; decoding is deterministic; a refused change is 403 and nothing else changes; the error
// body is valid JSON carrying the message; a decoded body, written back as the CLI writes it
// (StreamingJSONEncoder), decodes to the same call.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let (method, uri, fields, body) = split(bytes) else { return 0 }
    let peer = PeerCredentials(pid: 1, uid: 1000, gid: 1000)
    let request = HTTPRequest(method: method, uri: uri, headerFields: fields, body: body, peer: peer)

    // The target: a path without query or fragment; header names lowercased.
    precondition(!request.path.isEmpty && !request.path.contains("?") && !request.path.contains("#"), "path \(request.path)")
    precondition(request.headers.keys.allSatisfy { $0 == $0.lowercased() })
    precondition(HTTPRequestTarget(uri) == HTTPRequestTarget(uri))
    _ = APICall.routeName(request)

    let allowed = outcome(request, mayChange: true)
    check(allowed)
    if case .success(let call) = allowed { check(call) }
    precondition(outcome(request, mayChange: true) == allowed, "not deterministic: \(allowed)")

    // A reader (not root, not in the group): changes under /v1 are refused first, with 403.
    let refused = outcome(request, mayChange: false)
    let mutating = ["POST", "DELETE", "PUT", "PATCH"].contains(method)
    let parts = request.path.split(separator: "/")
    if mutating && request.path != "/metrics" && parts.first == "v1" && parts.count >= 2 {
        guard case .failure(let status, let code, _) = refused, status == 403, code == "forbidden" else {
            preconditionFailure("\(method) \(request.path) by a reader: \(refused), not 403")
        }
    } else {
        precondition(refused == allowed, "the authorizer changed \(method) \(request.path): \(allowed) vs \(refused)")
    }

    // What the CLI would send for the decoded body decodes to the same call.
    if case .success(let call) = allowed, let rewritten = try? reencoded(call) {
        var again = request
        again.body = rewritten
        let second = outcome(again, mayChange: true)
        precondition(second == allowed, "\(call) → \(String(decoding: rewritten, as: UTF8.self)) → \(second)")
    }
    return 0
}

enum Outcome: Equatable {
    case success(APICall)
    case failure(status: Int, code: String, message: String)
}

func outcome(_ r: HTTPRequest, mayChange: Bool) -> Outcome {
    do {
        return .success(try APICall(r) { _ in
            if !mayChange { throw APIError(403, "forbidden", "may read but not change") }
        })
    } catch let e as APIError {
        return .failure(status: e.status, code: e.code, message: e.message)
    } catch {
        preconditionFailure("not an APIError: \(type(of: error)) \(error)")
    }
}

func check(_ o: Outcome) {
    guard case .failure(let status, let code, let message) = o else { return }
    precondition((400..<500).contains(status), "status \(status) \(code): \(message)")
    precondition(!code.isEmpty && !message.isEmpty)
    // The error body the server writes (APIHandler.error): JSON that carries the message.
    let body = try! StreamingJSONEncoder(pretty: false).encode(["error": ErrorInfo(code: code, message: message)])
    let parsed = try! JSONSerialization.jsonObject(with: Data(body)) as! [String: Any]
    let info = parsed["error"] as! [String: Any]
    precondition(info["code"] as? String == code && info["message"] as? String == message,
                 "error body \(String(decoding: body, as: UTF8.self)) for \(message)")
}

/// What a decoded call promises the handler.
func check(_ call: APICall) {
    func isHex(_ s: String, _ counts: [Int]) -> Bool {
        counts.contains(s.utf8.count) && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
    switch call {
    case .devices(let q):
        if let c = q.classPrefix { precondition(isHex(c, [2, 4, 6]), "class \(c)") }
        if let v = q.vendor { precondition(isHex(v, [4]), "vendor \(v)") }
        if let d = q.device { precondition(q.vendor != nil && isHex(d, [4]), "device \(d)") }
        if let p = q.page { precondition((1...100_000).contains(p.limit)) }
    case .createVFs(_, let body):
        precondition(body.count >= 1)
    case .claims(let states?):
        precondition(states.allSatisfy(APICall.claimStates.contains))
    case .events(let since?):
        precondition(since >= 0)
    case .device(let a), .bind(let a, _), .restore(let a, _), .removeVFs(let a):
        precondition((try? PCIAddress(parsing: a.description)) == a)
    default:
        break
    }
}

/// The body of a decoded call as the CLI encodes it (nil for calls without one).
func reencoded(_ call: APICall) throws -> [UInt8]? {
    let e = StreamingJSONEncoder(pretty: false)
    switch call {
    case .bind(_, let b): return try e.encode(b)
    case .restore(_, let b): return try e.encode(b)
    case .createVFs(_, let b): return try e.encode(b)
    case .createClaim(let b): return try e.encode(b)
    case .putPool(_, let b): return try e.encode(b)
    case .startVM(let b): return try e.encode(b)
    case .applyPolicy(let b): return try e.encode(b)
    default: return nil
    }
}

/// A stand-in for the HTTP/1.1 parser: request line `METHOD SP TARGET SP HTTP/1.x`, header lines
/// `name: value` up to an empty line (CRLF or LF), then the body (Content-Length bytes of it when
/// that header is given). nil for what the server would refuse before Passage's code runs.
func split(_ bytes: [UInt8]) -> (String, String, [(name: String, value: String)], [UInt8])? {
    var lines: [[UInt8]] = []
    var i = 0, lineStart = 0
    var bodyStart: Int?
    while i < bytes.count {
        if bytes[i] == UInt8(ascii: "\n") {
            var line = Array(bytes[lineStart..<i])
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            if line.isEmpty && !lines.isEmpty { bodyStart = i + 1; break }
            lines.append(line)
            lineStart = i + 1
        }
        i += 1
    }
    guard let bodyStart, let requestLine = lines.first else { return nil }
    let words = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
    guard words.count == 3, !words[0].isEmpty, !words[1].isEmpty,
          words[0].allSatisfy({ (0x41...0x5A).contains($0) || $0 == UInt8(ascii: "-") }),
          words[2].elementsEqual("HTTP/1.1".utf8) || words[2].elementsEqual("HTTP/1.0".utf8),
          !words[1].contains(where: { $0 < 0x21 || $0 == 0x7F }) else { return nil }
    var fields: [(name: String, value: String)] = []
    var length: Int?
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0,
              !line[..<colon].contains(where: { $0 <= 0x20 || $0 >= 0x7F }),
              !line.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) else { return nil }
        let name = String(decoding: line[..<colon], as: UTF8.self)
        let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        if name.lowercased() == "content-length" {
            guard length == nil, let n = Int(value), n >= 0 else { return nil }
            length = n
        }
        fields.append((name, value))
    }
    var body = Array(bytes[bodyStart...])
    if let length {
        guard length <= body.count else { return nil }
        body = Array(body[..<length])
    }
    guard body.count <= 64 * 1024 else { return nil }  // HTTPLimits.maxBodyBytes: 413 before the handler
    return (String(decoding: words[0], as: UTF8.self), String(decoding: words[1], as: UTF8.self), fields, body)
}
