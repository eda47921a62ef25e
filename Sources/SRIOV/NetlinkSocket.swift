import CNetlink

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An owned libnl message (`struct nl_msg`), freed when this goes away.
struct NetlinkMessage: ~Copyable {
    let raw: OpaquePointer

    /// `nlmsg_alloc_simple(type, flags)`; nil when libnl cannot allocate.
    init?(type: Int32, flags: Int32) {
        guard let m = nlmsg_alloc_simple(type, flags) else { return nil }
        raw = m
    }

    deinit { nlmsg_free(raw) }

    var header: UnsafeMutablePointer<nlmsghdr> { nlmsg_hdr(raw) }

    /// The message as it goes on the wire.
    var bytes: [UInt8] {
        let h = header
        return [UInt8](UnsafeRawBufferPointer(start: h, count: Int(h.pointee.nlmsg_len)))
    }
}

/// A failed netlink request: the kernel's errno (positive) and its extended-ack text, if any.
struct NetlinkFailure: Error {
    var errno: Int32
    var kernelMessage: String?
    /// The libnl call that failed, when the failure is local (socket, send, receive).
    var call: String?

    var text: String {
        var s = String(cString: strerror(errno))
        if let kernelMessage { s += " (kernel: \(kernelMessage))" }
        if let call { s = "\(call): " + s }
        return s
    }
}

/// A connected NETLINK_ROUTE socket (libnl's `nl_sock`), freed when this goes away.
///
/// The socket belongs to the network namespace of the thread that created it; every request on it
/// is answered by that namespace's kernel side, whichever thread sends it.
struct NetlinkSocket: ~Copyable {
    private let sk: OpaquePointer

    init() throws(NetlinkFailure) {
        guard let sk = nl_socket_alloc() else { throw NetlinkFailure(errno: ENOMEM, call: "nl_socket_alloc") }
        let r = nl_connect(sk, NETLINK_ROUTE)
        if r < 0 {
            nl_socket_free(sk)
            throw NetlinkFailure(errno: Self.errnoFromLibnl(r), call: "nl_connect(NETLINK_ROUTE)")
        }
        // Replies with many VFs are large; let nl_recv size its buffer from a peek.
        nl_socket_enable_msg_peek(sk)
        _ = passage_nl_enable_ext_ack(sk)  // best effort: only adds the kernel's reason to errors
        self.sk = sk
    }

    deinit { nl_socket_free(sk) }

    /// Sends `message` and returns the reply messages that answer it, up to and including the end:
    /// an ack, NLMSG_DONE, or (for a request without NLM_F_ACK/NLM_F_DUMP) the single reply.
    /// An NLMSG_ERROR with a nonzero error becomes a `NetlinkFailure` with its errno and text.
    func transact(_ message: borrowing NetlinkMessage) throws(NetlinkFailure) -> [[UInt8]] {
        let sent = nl_send_auto(sk, message.raw)
        if sent < 0 { throw NetlinkFailure(errno: Self.errnoFromLibnl(sent), call: "nl_send_auto") }
        let seq = message.header.pointee.nlmsg_seq
        let flags = Int32(message.header.pointee.nlmsg_flags)
        let multi = flags & NLM_F_DUMP == NLM_F_DUMP
        let wantsAck = flags & NLM_F_ACK != 0
        var replies: [[UInt8]] = []
        while true {
            var peer = sockaddr_nl()
            var buf: UnsafeMutablePointer<UInt8>? = nil
            let n = nl_recv(sk, &peer, &buf, nil)
            if n < 0 { throw NetlinkFailure(errno: Self.errnoFromLibnl(n), call: "nl_recv") }
            defer { free(buf) }
            guard let buf, n > 0 else { throw NetlinkFailure(errno: EPROTO, kernelMessage: "empty reply", call: "nl_recv") }
            var remaining = n
            var h: UnsafeMutablePointer<nlmsghdr>? = UnsafeMutableRawPointer(buf).assumingMemoryBound(to: nlmsghdr.self)
            while let hdr = h, nlmsg_ok(hdr, remaining) != 0 {
                defer { h = nlmsg_next(hdr, &remaining) }
                guard hdr.pointee.nlmsg_seq == seq else { continue }  // a stale reply to an earlier request
                let type = Int32(hdr.pointee.nlmsg_type)
                if type == PASSAGE_NLMSG_ERROR {
                    let e = passage_nlmsgerr_error(hdr)
                    if e == 0 { return replies }
                    let text = passage_nlmsgerr_text(hdr).map { String(cString: $0) }
                    throw NetlinkFailure(errno: e < 0 ? -e : EPROTO, kernelMessage: text)
                }
                if type == PASSAGE_NLMSG_DONE { return replies }
                replies.append([UInt8](UnsafeRawBufferPointer(start: hdr, count: Int(hdr.pointee.nlmsg_len))))
                if !multi && !wantsAck { return replies }
            }
        }
    }

    /// libnl returns its own negative codes (`-NLE_*`); map the ones Passage reports to errnos.
    static func errnoFromLibnl(_ r: Int32) -> Int32 {
        switch -r {
        case NLE_NOMEM: ENOMEM
        case NLE_PERM: EPERM
        case NLE_NOACCESS: EACCES
        case NLE_OPNOTSUPP: EOPNOTSUPP
        case NLE_BAD_SOCK: EBADF
        case NLE_AGAIN: EAGAIN
        case NLE_INTR: EINTR
        case NLE_MSG_TRUNC: EMSGSIZE
        case NLE_OBJ_NOTFOUND, NLE_NODEV: ENODEV
        case NLE_INVAL: EINVAL
        default: EIO
        }
    }
}
