import Dispatch
import Foundation

/// Group commit for the store's one write connection: writes that arrive while a commit (and its
/// fsync) is running wait, and then go to disk together in one transaction with one fsync. Each
/// write runs in a savepoint of its own, so a write that fails (a constraint, say) is undone alone
/// and the others in its batch still commit. A write's completion runs only once its transaction
/// is durable, and completions run in commit order.
///
/// One writer alone pays one fsync per write, as without batching; many concurrent writers share
/// fsyncs, so the rate of durable writes grows with the number of writers instead of being capped
/// at the disk's fsync rate.
final class GroupCommitter: @unchecked Sendable {
    struct Write: Sendable {
        /// The write's statements; runs on the commit queue inside the batch's transaction.
        let apply: @Sendable (SQLiteConnection) throws(StoreError) -> Void
        /// nil once the write is durable, else why it is not (its own error, or the batch's).
        let finish: @Sendable (StoreError?) -> Void
    }

    /// How many commits (fsyncs) and writes so far: writes / commits is the batching achieved.
    struct Counts: Sendable, Equatable {
        var commits = 0
        var writes = 0
    }

    private let db: SQLiteConnection
    private let queue = DispatchQueue(label: "passage.store.commit")
    private let lock = NSLock()
    private var waiting: [Write] = []
    /// A commit is running or about to (on the commit queue, or inline for a blocking writer): only
    /// the one who set it uses the connection.
    private var draining = false
    private var _counts = Counts()
    /// A bound on one transaction, so one batch's completions are not held back by a huge backlog.
    static let maxBatch = 512

    init(_ db: SQLiteConnection) { self.db = db }

    var counts: Counts { lock.withLock { _counts } }

    /// Writes queued for the next commit (not the one running).
    var waitingCount: Int { lock.withLock { waiting.count } }

    /// Queues a write; starts a commit at once unless one is running (the write then goes with the next).
    func submit(_ w: Write) {
        let start = lock.withLock { () -> Bool in
            waiting.append(w)
            defer { draining = true }
            return !draining
        }
        if start { queue.async { self.drain() } }
    }

    /// Runs a write and blocks the calling thread until it is durable. When no commit is running the
    /// write is committed right here, as a lone writer did before group commit (no hop to the commit
    /// queue); else it joins the next batch. Never call it on the commit queue.
    func submitAndWait(_ apply: @escaping @Sendable (SQLiteConnection) throws(StoreError) -> Void) throws(StoreError) {
        dispatchPrecondition(condition: .notOnQueue(queue))
        final class Outcome: @unchecked Sendable { var error: StoreError? }
        let outcome = Outcome()
        let idle = lock.withLock { () -> Bool in
            if draining { return false }
            draining = true
            return true
        }
        if idle {
            commit([Write(apply: apply, finish: { outcome.error = $0 })])
            // Writes that came meanwhile waited for this commit: the commit queue takes them on.
            let more = lock.withLock { () -> Bool in
                if waiting.isEmpty { draining = false }
                return draining
            }
            if more { queue.async { self.drain() } }
        } else {
            let done = DispatchSemaphore(value: 0)
            submit(Write(apply: apply, finish: { error in
                outcome.error = error
                done.signal()
            }))
            done.wait()
        }
        if let error = outcome.error { throw error }
    }

    private func drain() {
        while true {
            let batch = lock.withLock { () -> [Write] in
                let n = min(waiting.count, Self.maxBatch)
                let batch = Array(waiting.prefix(n))
                waiting.removeFirst(n)
                if batch.isEmpty { draining = false }
                return batch
            }
            if batch.isEmpty { return }
            commit(batch)
        }
    }

    private func commit(_ batch: [Write]) {
        // Statements through query(): prepared once, not parsed again for every write.
        var errors = [StoreError?](repeating: nil, count: batch.count)
        do throws(StoreError) {
            try db.query("BEGIN IMMEDIATE")
            for (i, w) in batch.enumerated() {
                try db.query("SAVEPOINT write")
                do throws(StoreError) {
                    try w.apply(db)
                } catch {
                    errors[i] = error
                    try db.query("ROLLBACK TO write")
                }
                try db.query("RELEASE write")
            }
            try db.query("COMMIT")
        } catch {
            // Nothing of the batch is on disk: every write fails (with its own error if it had one).
            try? db.execute("ROLLBACK")
            for i in errors.indices where errors[i] == nil { errors[i] = error }
        }
        lock.withLock {
            _counts.commits += 1
            _counts.writes += batch.count
        }
        for (w, error) in zip(batch, errors) { w.finish(error) }
    }
}
