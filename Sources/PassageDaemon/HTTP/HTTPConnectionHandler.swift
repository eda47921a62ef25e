import Logging
import NIOCore
import NIOHTTP1

/// Sent down every connection's pipeline when the server begins a graceful shutdown.
struct HTTPQuiesceEvent: Sendable {}

/// One connection, one request at a time (NIO's `HTTPServerPipelineHandler` in front of it holds
/// pipelined requests back): assembles the request within the limits, runs the handler in a task,
/// writes its response, and keeps the request and idle timers.
final class HTTPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Keep-alive, after a response; no byte of the next request yet (idle timer).
        case idle
        /// A new connection, or bytes of a request seen but not its head (request timer).
        case awaitingHead
        /// Head received, body arriving (request timer).
        case receiving
        /// The handler is running.
        case handling
        /// Writing a streamed body.
        case streaming
        /// An error response or close is under way; input is ignored.
        case closing
    }

    private let front: HTTPFrontHandler
    private let peer: PeerCredentials?
    private let limits: HTTPLimits
    private let handler: any HTTPHandler
    private let metrics: HTTPServerMetrics
    private let logger: Logger

    private var context: ChannelHandlerContext?
    private let eventLoop: any EventLoop
    private var state = State.awaitingHead
    private var timer: Scheduled<Void>?
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var quiescing = false
    /// The client half-closed; answer what is pending, then close.
    private var inputClosed = false
    private var streamTask: Task<Void, Never>?
    private var keepAliveAfterResponse = true

    init(eventLoop: any EventLoop, front: HTTPFrontHandler, peer: PeerCredentials?, limits: HTTPLimits, handler: any HTTPHandler,
         metrics: HTTPServerMetrics, logger: Logger) {
        self.eventLoop = eventLoop
        self.front = front
        self.peer = peer
        self.limits = limits
        self.handler = handler
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        front.onBytes = { [weak self] in self?.bytesArrived() }
        if context.channel.isActive { armRequestTimer() }
    }

    func channelActive(context: ChannelHandlerContext) {
        if timer == nil, state == .awaitingHead { armRequestTimer() }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        state = .closing
        streamTask?.cancel()
        streamTask = nil
        self.context = nil
        front.onBytes = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        streamTask?.cancel()
        self.context = nil
    }

    // MARK: input

    private func bytesArrived() {
        sawRequestBytes = true
        if state == .idle {
            state = .awaitingHead
            armRequestTimer()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            switch state {
            case .idle:
                // Pipelined bytes that arrived while the previous response was written.
                armRequestTimer()
            case .awaitingHead:
                break
            default:
                return
            }
            state = .receiving
            self.head = head
            self.body = nil
            let lengths = head.headers["content-length"]
            if let text = lengths.first, let length = Int(text), length > limits.maxBodyBytes {
                refuse(status: 413, code: "body-too-large",
                       message: "request body of \(length) bytes exceeds the limit of \(limits.maxBodyBytes) bytes")
                return
            }
            if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                                      promise: nil)
            }
        case .body(var part):
            guard state == .receiving else { return }
            let have = body?.readableBytes ?? 0
            if have + part.readableBytes > limits.maxBodyBytes {
                refuse(status: 413, code: "body-too-large",
                       message: "request body exceeds the limit of \(limits.maxBodyBytes) bytes")
                return
            }
            if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
        case .end:
            guard state == .receiving, let head else { return }
            cancelTimer()
            state = .handling
            dispatch(head: head, body: body, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is HTTPQuiesceEvent:
            quiescing = true
            switch state {
            case .idle:
                close()
            case .awaitingHead where !sawRequestBytes:
                close()
            case .streaming:
                // Event streams do not end on their own; end them so the connection can close.
                streamTask?.cancel()
            default:
                break  // finish the request in flight; its response says `connection: close`
            }
        case ChannelEvent.inputClosed:
            inputClosed = true
            switch state {
            case .idle, .awaitingHead, .receiving:
                close()
            default:
                break
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Whether any byte of the current request has been seen (a fresh connection that has sent
    /// nothing can be closed at once on shutdown).
    private var sawRequestBytes = false

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        switch state {
        case .closing:
            return
        case .idle, .awaitingHead, .receiving:
            if let parserError = error as? HTTPParserError {
                if case .headerOverflow = parserError {
                    metrics.update { $0.headerTooLarge += 1 }
                    refuse(status: 431, code: "header-too-large",
                           message: "request line and headers exceed the limit of \(limits.maxHeaderBytes) bytes")
                } else {
                    metrics.update { $0.malformedRequests += 1 }
                    refuse(status: 400, code: "bad-request", message: "malformed HTTP request: \(parserError)")
                }
                return
            }
            close()
        case .handling, .streaming:
            close()
        }
    }

    // MARK: handling

    private func dispatch(head: HTTPRequestHead, body: ByteBuffer?, context: ChannelHandlerContext) {
        let request = HTTPRequest(method: head.method.rawValue, uri: head.uri, headerFields: head.headers,
                                  body: body.map { Array($0.readableBytesView) } ?? [], peer: peer)
        self.body = nil
        let promise = context.eventLoop.makePromise(of: HTTPResponse.self)
        let handler = self.handler
        promise.completeWithTask { await handler.handle(request) }
        promise.futureResult.assumeIsolated().whenSuccess { [self] response in
            respond(response, to: head)
        }
    }

    private func respond(_ response: HTTPResponse, to request: HTTPRequestHead) {
        guard state == .handling, let context else { return }  // the client went away; the stream is dropped
        var keepAlive = request.isKeepAlive && !quiescing && !inputClosed
        var headers = HTTPHeaders()
        for (name, value) in response.headers {
            switch name.lowercased() {
            case "content-length", "transfer-encoding":
                continue  // the server frames the body
            case "connection":
                if value.lowercased().contains("close") { keepAlive = false }
                continue
            default:
                headers.add(name: name, value: value)
            }
        }
        let status = HTTPResponseStatus(statusCode: response.status)
        let bodyAllowed = !(100..<200).contains(response.status) && response.status != 204 && response.status != 304
        let isHead = request.method == .HEAD
        let version = HTTPVersion(major: 1, minor: request.version.minor == 0 ? 0 : 1)
        metrics.countResponse(status: response.status)

        var fixed: ByteBuffer?
        switch response.body {
        case .bytes(let bytes): fixed = bytes.isEmpty ? ByteBuffer() : context.channel.allocator.buffer(bytes: bytes)
        case .buffer(let buffer): fixed = buffer
        case .stream: fixed = nil
        }
        switch response.body {
        case .bytes, .buffer:
            let body = fixed ?? ByteBuffer()
            if bodyAllowed { headers.add(name: "content-length", value: String(body.readableBytes)) }
            if !keepAlive { headers.add(name: "connection", value: "close") }
            else if version.minor == 0 { headers.add(name: "connection", value: "keep-alive") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))),
                          promise: nil)
            if bodyAllowed && !isHead && body.readableBytes > 0 {
                context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            }
            finish(keepAlive: keepAlive)
        case .stream(let stream):
            if version.minor == 0 {
                keepAlive = false  // no chunked encoding: the body ends with the connection
            } else if bodyAllowed {
                headers.add(name: "transfer-encoding", value: "chunked")
            }
            if !keepAlive { headers.add(name: "connection", value: "close") }
            context.writeAndFlush(
                wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))),
                promise: nil)
            guard bodyAllowed && !isHead else {
                finish(keepAlive: keepAlive)
                return
            }
            state = .streaming
            keepAliveAfterResponse = keepAlive
            let loop = context.eventLoop
            let bound = NIOLoopBound(self, eventLoop: loop)
            streamTask = Task {
                for await chunk in stream {
                    if chunk.isEmpty { continue }  // an empty chunk would end the chunked body
                    let written = loop.flatSubmit { bound.value.writeStreamChunk(chunk) }
                    do { try await written.get() } catch { break }
                }
                loop.execute { bound.value.streamEnded() }
            }
        }
    }

    private func writeStreamChunk(_ chunk: [UInt8]) -> EventLoopFuture<Void> {
        guard state == .streaming, let context else {
            return eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        let buffer = context.channel.allocator.buffer(bytes: chunk)
        let written = context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))))
        closeUnlessWritten(written)
        return written
    }

    private func streamEnded() {
        streamTask = nil
        guard state == .streaming else { return }
        finish(keepAlive: keepAliveAfterResponse && !quiescing && !inputClosed)
    }

    /// Ends the response; either back to idle (keep-alive) or close once it is written.
    private func finish(keepAlive: Bool) {
        guard let context else { return }
        sawRequestBytes = false
        head = nil
        if keepAlive {
            // State first: writing `.end` may deliver a pipelined request at once.
            state = .idle
            armIdleTimer()
            closeUnlessWritten(context.writeAndFlush(wrapOutboundOut(.end(nil))))
        } else {
            state = .closing
            cancelTimer()
            let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            closeUnlessWritten(written)
            written.assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    /// Closes the connection if `write` (a response or a stream chunk) has not reached the socket
    /// within `limits.writeTimeout`: the client stopped reading.
    private func closeUnlessWritten(_ write: EventLoopFuture<Void>) {
        guard let context else { return }
        let limit = limits.writeTimeout
        let deadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(limit)) { [self] in
            metrics.update { $0.writeTimeouts += 1 }
            logger.debug("closing a connection whose client stopped reading", metadata: ["seconds": "\(limit)", "peer": "\(peer.map { "\($0.pid)" } ?? "?")"])
            self.context?.close(mode: .all, promise: nil)
        }
        write.whenComplete { _ in deadline.cancel() }
    }

    // MARK: refusing and closing

    /// The server's own error response, written raw, then a lingering close.
    private func refuse(status: Int, code: String, message: String) {
        guard let context, state != .closing else { return }
        state = .closing
        cancelTimer()
        if status == 413 { metrics.update { $0.bodyTooLarge += 1 } }
        metrics.countResponse(status: status)
        logger.debug("refusing request", metadata: ["status": "\(status)", "code": "\(code)", "peer": "\(peer.map { "\($0.pid)" } ?? "?")"])
        let bytes = HTTPErrorBody.closingResponse(status: status, code: code, message: message,
                                                  allocator: context.channel.allocator)
        front.sendAndClose(bytes, linger: .milliseconds(Int64(min(limits.requestTimeout, 2) * 1000)))
    }

    private func close() {
        guard let context else { return }
        state = .closing
        cancelTimer()
        context.close(promise: nil)
    }

    // MARK: timers

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func armRequestTimer() {
        guard let context else { return }
        cancelTimer()
        let limit = limits.requestTimeout
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(limit)) { [self] in
            timer = nil
            guard state == .awaitingHead || state == .receiving else { return }
            metrics.update { $0.requestTimeouts += 1 }
            refuse(status: 408, code: "request-timeout",
                   message: "the request did not arrive within \(limit) seconds")
        }
    }

    private func armIdleTimer() {
        guard let context else { return }
        cancelTimer()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(limits.idleTimeout)) { [self] in
            timer = nil
            guard state == .idle else { return }
            metrics.update { $0.idleTimeouts += 1 }
            close()
        }
    }

    private static func amount(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64((max(seconds, 0) * 1e9).rounded()))
    }
}
