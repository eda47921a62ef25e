import Foundation
import PassageAPI

/// Fans events out to every `GET /v1/events` stream and keeps the last ones for `?since=`.
public final class EventHub: @unchecked Sendable {
    private let lock = NSLock()
    private var recent: [EventInfo] = []
    private var nextSeq = 1
    private var subscribers: [UUID: AsyncStream<EventInfo>.Continuation] = [:]
    private let keep: Int

    public init(keep: Int = 100_000) { self.keep = keep }

    @discardableResult
    public func publish(_ kind: String, address: String? = nil, claimId: String? = nil, operationId: String? = nil,
                        message: String) -> EventInfo {
        lock.lock()
        let event = EventInfo(seq: nextSeq, time: rfc3339(Date()), kind: kind, address: address, claimId: claimId,
                              operationId: operationId, message: message)
        nextSeq += 1
        recent.append(event)
        if recent.count > keep { recent.removeFirst(recent.count - keep) }
        let targets = Array(subscribers.values)
        lock.unlock()
        for t in targets { t.yield(event) }
        return event
    }

    /// Events after `since` (kept ones), then every new one until the consumer stops.
    public func subscribe(since: Int?) -> AsyncStream<EventInfo> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<EventInfo>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        lock.lock()
        if let since { for e in recent where e.seq > since { continuation.yield(e) } }
        subscribers[id] = continuation
        lock.unlock()
        continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            self.lock.lock()
            self.subscribers[id] = nil
            self.lock.unlock()
        }
        return stream
    }

    /// The events kept, oldest first.
    public var kept: [EventInfo] { lock.withLock { recent } }

    public var subscriberCount: Int { lock.withLock { subscribers.count } }

    /// Ends every stream (shutdown).
    public func finishAll() {
        let targets = lock.withLock { Array(subscribers.values) }
        for t in targets { t.finish() }
    }
}

/// `2026-11-25T20:51:59.123Z` (UTC, milliseconds). Formatted by hand: creating an
/// ISO8601DateFormatter per call cost a tenth of a claim's time.
func rfc3339(_ date: Date) -> String {
    let ms = Int64((date.timeIntervalSince1970 * 1000).rounded())
    var seconds = time_t(ms / 1000)
    let millis = Int(ms % 1000)
    var tm = tm()
    gmtime_r(&seconds, &tm)
    func pad(_ v: Int32, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
    return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
}
