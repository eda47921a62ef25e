import Synchronization

/// Counters the HTTP server keeps; `snapshot()` for tests and health, `prometheusText()` for
/// `GET /v1/metrics`. Shared by all connections; updates are a short lock.
public final class HTTPServerMetrics: Sendable {
    public struct Snapshot: Sendable, Hashable {
        /// Responses sent, by status class: index 1 = 1xx … 5 = 5xx (0 unused). Includes the
        /// server's own error responses (400, 408, 413, 431, 503).
        public var responsesByClass: [Int] = [0, 0, 0, 0, 0, 0]
        /// Connections open now (accepted and not yet closed; rejected ones not counted).
        public var openConnections = 0
        /// Connections accepted and served since start.
        public var acceptedConnections = 0
        /// Connections answered 503 because `maxConnections` were open (or shutdown had begun).
        public var rejectedConnections = 0
        /// Requests that did not arrive within `requestTimeout` (answered 408).
        public var requestTimeouts = 0
        /// Keep-alive connections closed after `idleTimeout`.
        public var idleTimeouts = 0
        /// Connections closed because the client did not read a response within `writeTimeout`.
        public var writeTimeouts = 0
        /// Requests refused as malformed (400).
        public var malformedRequests = 0
        /// Requests refused for their body (413) or head (431) size.
        public var bodyTooLarge = 0
        public var headerTooLarge = 0

        public var requests: Int { responsesByClass.reduce(0, +) - responsesByClass[1] }

        public init() {}
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public func snapshot() -> Snapshot { state.withLock { $0 } }

    func update(_ body: (inout Snapshot) -> Void) { state.withLock { body(&$0) } }

    func countResponse(status: Int) {
        let cls = min(max(status / 100, 1), 5)
        state.withLock { $0.responsesByClass[cls] += 1 }
    }

    /// Prometheus text exposition format (version 0.0.4), metric names under `prefix`.
    public func prometheusText(prefix: String = "passage_http") -> String {
        let s = snapshot()
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += "# HELP \(prefix)_\(name) \(help)\n# TYPE \(prefix)_\(name) \(type)\n"
            for (labels, value) in samples { out += "\(prefix)_\(name)\(labels) \(value)\n" }
        }
        metric("responses_total", "counter", "HTTP responses sent, by status class.",
               (1...5).map { ("{code=\"\($0)xx\"}", s.responsesByClass[$0]) })
        metric("connections_open", "gauge", "Connections open now.", [("", s.openConnections)])
        metric("connections_accepted_total", "counter", "Connections accepted.", [("", s.acceptedConnections)])
        metric("connections_rejected_total", "counter", "Connections refused with 503 (too many open).",
               [("", s.rejectedConnections)])
        metric("timeouts_total", "counter", "Connections closed by a timeout.",
               [("{kind=\"request\"}", s.requestTimeouts), ("{kind=\"idle\"}", s.idleTimeouts), ("{kind=\"write\"}", s.writeTimeouts)])
        metric("refused_requests_total", "counter", "Requests refused by the server before the handler.",
               [("{reason=\"malformed\"}", s.malformedRequests), ("{reason=\"body-too-large\"}", s.bodyTooLarge),
                ("{reason=\"header-too-large\"}", s.headerTooLarge)])
        return out
    }
}
