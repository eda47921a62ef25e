import NIOCore

/// First handler after the socket. Tells the connection handler when bytes arrive (an idle
/// keep-alive connection starts its request timer on the first byte), and writes the server's own
/// closing error responses as raw bytes. After such a response it stops passing input on, shuts
/// down its output and keeps reading and discarding (a lingering close, so a client still sending a
/// body reads the error instead of a reset) until the client closes or `linger` passes.
final class HTTPFrontHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Called on the event loop for each read while not discarding.
    var onBytes: (() -> Void)?
    private var context: ChannelHandlerContext?
    private var discarding = false
    private var lingerTimer: Scheduled<Void>?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if discarding { return }
        onBytes?()
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if discarding {
            // Handlers further in may be holding reads back; keep draining.
            context.read()
            return
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if discarding {
            if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if discarding {
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
        lingerTimer = nil
        context.fireChannelInactive()
    }

    /// Writes `bytes` (a complete response) and closes; with `linger`, half-closes first and drains input.
    func sendAndClose(_ bytes: ByteBuffer, linger: TimeAmount?) {
        guard let context, !discarding else { return }
        discarding = true
        let loop = context.eventLoop.assumeIsolated()
        context.writeAndFlush(wrapOutboundOut(bytes)).assumeIsolated().whenComplete { [self] result in
            guard case .success = result, let linger, context.channel.isActive else {
                context.close(promise: nil)
                return
            }
            context.close(mode: .output).assumeIsolated().whenFailure { _ in context.close(promise: nil) }
            self.lingerTimer = loop.scheduleTask(in: linger) { context.close(promise: nil) }
            context.read()
        }
    }
}

/// The whole pipeline of a connection refused at accept time (too many open, or shutting down):
/// one 503 and close.
final class HTTPRejectHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let message: String

    init(message: String) { self.message = message }

    func channelActive(context: ChannelHandlerContext) {
        let response = HTTPErrorBody.closingResponse(status: 503, code: "too-many-connections", message: message,
                                                     allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
