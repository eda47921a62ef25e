import NIOCore
import NIOHTTP1
import PassageAPI

/// The project's error shape, `{"error":{"code":"…","message":"…"}}`, and the complete responses the
/// server writes on its own (400, 408, 413, 431, 503) straight to the socket, bypassing the HTTP
/// encoder, because they can come before or in the middle of a request.
enum HTTPErrorBody {
    private struct Envelope: Encodable { var error: ErrorInfo }

    static func json(code: String, message: String) -> [UInt8] {
        (try? StreamingJSONEncoder(pretty: false).encode(Envelope(error: ErrorInfo(code: code, message: message))))
            ?? Array(#"{"error":{"code":"internal","message":"error encoding failed"}}"#.utf8)
    }

    /// A whole HTTP/1.1 response that ends the connection.
    static func closingResponse(status: Int, code: String, message: String,
                                allocator: ByteBufferAllocator) -> ByteBuffer {
        let body = json(code: code, message: message)
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        var buffer = allocator.buffer(capacity: body.count + 128)
        buffer.writeString("HTTP/1.1 \(status) \(reason)\r\ncontent-type: application/json\r\ncontent-length: \(body.count)\r\nconnection: close\r\n\r\n")
        buffer.writeBytes(body)
        return buffer
    }
}
