import Foundation

/// What claims and releases have decided but the store cannot show yet (its reads see committed
/// rows only, and a claim's intent commits off the change queue): the groups of claims decided and
/// not yet recorded, the claims being released, and the idempotency keys of creates under way.
final class InFlight: @unchecked Sendable {
    private let lock = NSLock()
    private var groups: [Int: String] = [:]
    private var releasing: Set<String> = []
    private var keys: [String: [CheckedContinuation<Bool, Never>]] = [:]

    /// Groups promised to claims whose holds are not committed yet.
    var reservedGroups: [Int: String] { lock.withLock { groups } }

    /// Reserves `groups` for claim `id` (the caller checked that they are free, on the change queue).
    func reserve(_ groups: [Int], for id: String) {
        lock.withLock { for g in groups { self.groups[g] = id } }
    }

    /// Drops the reservations once the holds are committed, or the claim did not get them.
    func unreserve(_ groups: [Int]) {
        lock.withLock { for g in groups { self.groups[g] = nil } }
    }

    /// False when a release of `id` is already under way.
    func beginRelease(_ id: String) -> Bool {
        lock.withLock { releasing.insert(id).inserted }
    }

    func endRelease(_ id: String) {
        _ = lock.withLock { releasing.remove(id) }
    }

    /// Waits until no other create with this idempotency key is under way, then marks this one.
    func enter(key: String) async {
        while true {
            let entered = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                lock.lock()
                if keys[key] == nil {
                    keys[key] = []
                    lock.unlock()
                    c.resume(returning: true)
                } else {
                    keys[key]!.append(c)
                    lock.unlock()
                }
            }
            if entered { return }
        }
    }

    /// The create with this key is done: the ones waiting for it try again.
    func leave(key: String) {
        let waiting = lock.withLock { keys.removeValue(forKey: key) ?? [] }
        for c in waiting { c.resume(returning: false) }
    }
}
