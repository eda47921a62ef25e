#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// HTTP/1.1 on a Unix socket, as a swift-service-lifecycle `Service`.
///
/// The socket is bound and listening when `init` returns (clients that connect before `run()` wait in
/// the backlog). `run()` serves until graceful shutdown (stop accepting, let requests in flight
/// finish with `connection: close`, end event streams, close idle connections, then return) or task
/// cancellation (close everything at once). It removes the socket file it created on the way out.
///
/// Each connection gets the peer's credentials (SO_PEERCRED) once, at accept; requests are handled
/// one at a time per connection in a task, so a slow handler holds up only its own connection.
public final class UnixHTTPServer: Service, Sendable {
    /// The socket file, when this server bound it (nil for a systemd-passed socket).
    public let socketPath: String?
    public let limits: HTTPLimits
    /// Counters for `/v1/metrics`; pass your own instance to the initializer to hold it before the server exists.
    public let metrics: HTTPServerMetrics

    private let handler: any HTTPHandler
    private let logger: Logger
    private let group: any EventLoopGroup
    private let listener: Mutex<Int32?>
    private let socketIdentity: (device: UInt64, inode: UInt64)?
    private let connections = ConnectionRegistry()

    /// Binds `socketPath` (removing a stale socket file first, refusing when another server answers
    /// on it), sets its mode and group, and listens.
    /// - Throws: `HTTPServerError` (`socket-in-use`, `not-a-socket`, `bind-failed`, …).
    public init(socketPath: String, mode: mode_t = 0o660, group: gid_t? = nil, limits: HTTPLimits = .init(),
                handler: any HTTPHandler, logger: Logger, metrics: HTTPServerMetrics = HTTPServerMetrics(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        let bound = try UnixSocketListener.bind(path: socketPath, mode: mode, group: group,
                                                backlog: Int32(clamping: max(limits.maxConnections, 128)))
        self.socketPath = socketPath
        self.socketIdentity = (bound.device, bound.inode)
        self.listener = Mutex(bound.fd)
        self.limits = limits
        self.handler = handler
        self.logger = logger
        self.group = eventLoopGroup
        self.metrics = metrics
    }

    /// Serves on a socket that is already bound and listening, e.g. systemd's (see
    /// `systemdListenDescriptor()`). The server owns the descriptor from now on.
    public init(listeningDescriptor: Int32, limits: HTTPLimits = .init(), handler: any HTTPHandler, logger: Logger,
                metrics: HTTPServerMetrics = HTTPServerMetrics(), eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.socketPath = nil
        self.socketIdentity = nil
        self.listener = Mutex(listeningDescriptor)
        self.limits = limits
        self.handler = handler
        self.logger = logger
        self.group = eventLoopGroup
        self.metrics = metrics
    }

    deinit {
        // Never run: give the socket back.
        if let fd = listener.withLock({ $0.take() }) {
            Glibc.close(fd)
            removeSocketFile()
        }
    }

    /// The listening socket systemd passed (`passaged.socket`): fd 3 when `LISTEN_PID` is this process
    /// and `LISTEN_FDS` ≥ 1, else nil. Clears the `LISTEN_*` variables so children do not see them
    /// and marks the descriptor close-on-exec.
    public static func systemdListenDescriptor() -> Int32? {
        UnixSocketListener.systemdListenDescriptor(unsetEnvironment: true)
    }

    public func run() async throws {
        guard let fd = listener.withLock({ $0.take() }) else {
            throw HTTPServerError(code: "already-running", message: "UnixHTTPServer.run() called twice")
        }
        defer { removeSocketFile() }

        let limits = self.limits
        let handler = self.handler
        let metrics = self.metrics
        let logger = self.logger
        let connections = self.connections
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Int32(clamping: max(limits.maxConnections, 128)))
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                Self.initializeConnection(channel, limits: limits, handler: handler, metrics: metrics,
                                          logger: logger, connections: connections)
            }
        let server = try await bootstrap.withBoundSocket(fd).get()
        logger.info("HTTP server listening", metadata: ["socket": "\(socketPath ?? "fd \(fd)")"])

        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await server.closeFuture.get()
            } onGracefulShutdown: {
                server.close(promise: nil)
            }
            // No new connections from here on; let the open ones finish.
            let open = connections.beginShutdown()
            logger.info("HTTP server draining", metadata: ["connections": "\(open.count)"])
            for channel in open {
                channel.pipeline.fireUserInboundEventTriggered(HTTPQuiesceEvent())
            }
            for channel in open {
                try? await channel.closeFuture.get()
            }
        } onCancel: {
            server.close(promise: nil)
            for channel in connections.beginShutdown() { channel.close(promise: nil) }
        }
        logger.info("HTTP server stopped")
    }

    private func removeSocketFile() {
        if let socketPath, let id = socketIdentity {
            UnixSocketListener.removeIfOurs(path: socketPath, device: id.device, inode: id.inode)
        }
    }

    // MARK: per connection

    private static func initializeConnection(_ channel: any Channel, limits: HTTPLimits, handler: any HTTPHandler,
                                             metrics: HTTPServerMetrics, logger: Logger,
                                             connections: ConnectionRegistry) -> EventLoopFuture<Void> {
        switch connections.admit(channel, maxConnections: limits.maxConnections) {
        case .refused(let shuttingDown):
            metrics.update { $0.rejectedConnections += 1 }
            let message = shuttingDown
                ? "the daemon is shutting down; retry shortly"
                : "more than \(limits.maxConnections) connections are open; close idle connections or retry later"
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(HTTPRejectHandler(message: message))
            }
        case .admitted(let open):
            metrics.update {
                $0.acceptedConnections += 1
                $0.openConnections = open
            }
            channel.closeFuture.whenComplete { _ in
                let open = connections.remove(channel)
                metrics.update { $0.openConnections = open }
            }
        }

        let credentials: EventLoopFuture<PeerCredentials?>
        if let provider = channel as? any SocketOptionProvider {
            credentials = provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET),
                                                         name: SocketOptionName(SO_PEERCRED))
                .map { (cred: UCred) -> PeerCredentials? in
                    PeerCredentials(pid: cred.pid, uid: cred.uid, gid: cred.gid)
                }
                .recover { _ in nil }
        } else {
            credentials = channel.eventLoop.makeSucceededFuture(nil)
        }
        return credentials.flatMapThrowing { peer in
            let front = HTTPFrontHandler()
            var decoderLimits = NIOHTTPDecoderLimitConfiguration()
            decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
            decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(front)
            try sync.configureHTTPServerPipeline(
                position: .last, withPipeliningAssistance: true, withServerUpgrade: nil,
                withErrorHandling: false, withOutboundHeaderValidation: true,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
            try sync.addHandler(HTTPConnectionHandler(
                eventLoop: channel.eventLoop, front: front, peer: peer, limits: limits, handler: handler,
                metrics: metrics, logger: logger))
        }
    }
}

/// `struct ucred` from <sys/socket.h> (Glibc hides it behind _GNU_SOURCE): pid, uid, gid; 12 bytes.
struct UCred: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// The open connections, for the connection limit and for draining at shutdown.
final class ConnectionRegistry: Sendable {
    enum Admission {
        case admitted(open: Int)
        case refused(shuttingDown: Bool)
    }

    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var shuttingDown = false
    }

    private let state = Mutex(State())

    func admit(_ channel: any Channel, maxConnections: Int) -> Admission {
        state.withLock { s in
            if s.shuttingDown { return .refused(shuttingDown: true) }
            if s.channels.count >= maxConnections { return .refused(shuttingDown: false) }
            s.channels[ObjectIdentifier(channel)] = channel
            return .admitted(open: s.channels.count)
        }
    }

    /// Returns how many stay open.
    func remove(_ channel: any Channel) -> Int {
        state.withLock { s in
            s.channels[ObjectIdentifier(channel)] = nil
            return s.channels.count
        }
    }

    /// Refuses new connections from now on; returns the open ones.
    func beginShutdown() -> [any Channel] {
        state.withLock { s in
            s.shuttingDown = true
            return Array(s.channels.values)
        }
    }
}
