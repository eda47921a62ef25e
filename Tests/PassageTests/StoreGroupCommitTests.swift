import Foundation
import Testing
@testable import PassageDaemon

/// The store's group commit, driven directly: a write held open inside its commit lets a test
/// queue others behind it and know exactly which batch each one lands in.
@Suite(.timeLimit(.minutes(1))) struct StoreGroupCommitTests {
    /// Holds a write inside the running commit until opened.
    final class Gate: @unchecked Sendable {
        private let lock = NSLock()
        private var _entered = false
        private let opened = DispatchSemaphore(value: 0)
        var entered: Bool { lock.withLock { _entered } }
        /// Called by the held write, on the commit queue.
        func hold() {
            lock.withLock { _entered = true }
            opened.wait()
        }
        func open() { opened.signal() }
    }

    let dir: String

    init() {
        dir = NSTemporaryDirectory() + "/passage-store-\(UUID().uuidString.prefix(8))"
    }

    func until(_ what: String, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(10)
        while try !condition() {
            guard Date() < deadline else { throw TestSetupError("timed out waiting until \(what)") }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Starts a write that stays inside its commit until `gate` opens; returns once it is there.
    func holdCommit(_ store: Store, _ gate: Gate, _ body: @escaping @Sendable (Store.Transaction) throws(StoreError) -> Int64) async throws -> Task<Int64, any Error> {
        let task = Task { try await store.commit { tx throws(StoreError) in
            gate.hold()
            return try body(tx)
        } }
        try await until("the held write runs") { gate.entered }
        return task
    }

    @Test func writesArrivingDuringACommitShareTheNextOneAndAreDurable() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(directory: dir)
        let base = store.commitCounts
        let gate = Gate()
        let first = try await holdCommit(store, gate) { tx throws(StoreError) in try tx.insertIntent(kind: "test", claimID: nil, payload: "first", now: 1) }
        let others = (0..<32).map { i in
            Task { try await store.commit { tx throws(StoreError) in try tx.insertIntent(kind: "test", claimID: nil, payload: "\(i)", now: 2) } }
        }
        try await until("32 writes wait for the next commit") { store.committer.waitingCount == 32 }
        // Reads have a connection of their own: they neither wait for the open transaction nor see it.
        #expect(try store.pendingIntents().isEmpty)
        #expect(try store.groupHolds().isEmpty)
        gate.open()
        let firstID = try await first.value
        var ids: [Int64] = []
        for t in others { ids.append(try await t.value) }
        let counts = store.commitCounts
        #expect(counts.commits - base.commits == 2, "the held write's commit, then one for the 32 that waited")
        #expect(counts.writes - base.writes == 33)
        #expect(Set(ids).count == 32 && ids.allSatisfy { $0 > firstID })
        // Every write is on disk when its commit returns: a second connection sees all of them.
        let other = try Store(directory: dir)
        #expect(try other.pendingIntents().map(\.payload).sorted() == (["first"] + (0..<32).map(String.init)).sorted())
    }

    @Test func aWriteThatFailsIsUndoneAloneAndTheRestOfItsBatchCommits() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(directory: dir)
        let onGroup7 = [Store.ClaimDevice(address: "0000:10:00.0", iommuGroup: 7, previousDriver: "e1000e", previousOverride: nil, requested: true)]
        let onGroup8 = [Store.ClaimDevice(address: "0000:10:01.0", iommuGroup: 8, previousDriver: "e1000e", previousOverride: nil, requested: true)]
        let gate = Gate()
        let first = try await holdCommit(store, gate) { tx throws(StoreError) in
            try tx.beginClaim(id: "c-a", owner: "a", idempotencyKey: nil, request: "{}", devices: onGroup7, now: 1)
        }
        // Behind it, in one batch: a claim on the group c-a takes (refused by the primary key) and one on a free group.
        let taken = Task { try await store.commit { tx throws(StoreError) in
            try tx.beginClaim(id: "c-b", owner: "b", idempotencyKey: nil, request: "{}", devices: onGroup7, now: 2)
        } }
        try await until("c-b waits") { store.committer.waitingCount == 1 }
        let free = Task { try await store.commit { tx throws(StoreError) in
            try tx.beginClaim(id: "c-c", owner: "c", idempotencyKey: nil, request: "{}", devices: onGroup8, now: 3)
        } }
        try await until("c-c waits") { store.committer.waitingCount == 2 }
        let base = store.commitCounts
        gate.open()
        _ = try await first.value
        do {
            _ = try await taken.value
            Issue.record("a second claim on group 7 was committed")
        } catch let e as StoreError {
            #expect(e.constraint, "\(e)")
        }
        _ = try await free.value
        #expect(store.commitCounts.commits - base.commits == 2)
        #expect(try store.groupHolds() == [7: "c-a", 8: "c-c"])
        #expect(try store.claim(id: "c-b") == nil, "nothing of the refused claim is left: no claim row, no devices, no intent")
        #expect(try store.pendingIntents().compactMap(\.claimID).sorted() == ["c-a", "c-c"])
    }

    @Test func completionsRunInCommitOrder() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(directory: dir)
        final class Order: @unchecked Sendable {
            let lock = NSLock()
            var ids: [Int64] = []
        }
        let order = Order()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<64 {
                group.addTask {
                    _ = try await store.commit({ tx throws(StoreError) in try tx.insertIntent(kind: "test", claimID: nil, payload: "\(i)", now: 1) },
                                               whenDurable: { id in order.lock.withLock { order.ids.append(id) } })
                }
            }
            try await group.waitForAll()
        }
        // Intent ids are handed out in the order writes run, so completions in commit order see them rising.
        #expect(order.ids.count == 64)
        #expect(order.ids == order.ids.sorted())
    }

    @Test func aBlockingWriteCommitsInlineWhenIdleAndHandsOnWhatQueuedBehindIt() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(directory: dir)
        let base = store.commitCounts
        let gate = Gate()
        // A lone blocking writer commits on its own thread; held there, the next writes queue.
        let inline = Task { try await blocking { try store.write { tx throws(StoreError) in
            gate.hold()
            return try tx.insertIntent(kind: "test", claimID: nil, payload: "inline", now: 1)
        } } }
        try await until("the blocking write runs") { gate.entered }
        let queued = Task { try await store.commit { tx throws(StoreError) in try tx.insertIntent(kind: "test", claimID: nil, payload: "queued", now: 2) } }
        let blocked = Task { try await blocking { try store.beginIntent(kind: "test", payload: "blocked", now: 3) } }
        try await until("two writes wait") { store.committer.waitingCount == 2 }
        gate.open()
        // The commit queue takes over what waited (else these would never return).
        let ids = [try await inline.value, try await queued.value, try await blocked.value]
        #expect(ids[0] < ids[1] && ids[0] < ids[2])
        #expect(store.commitCounts.commits - base.commits == 2 && store.commitCounts.writes - base.writes == 3)
        #expect(try Store(directory: dir).pendingIntents().map(\.payload).sorted() == ["blocked", "inline", "queued"])
    }

    @Test func blockingWritesFromManyThreadsAllLand() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try Store(directory: dir)
        let threads = 16, each = 10
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<threads {
                group.addTask {
                    try await blocking {
                        for i in 0..<each { _ = try store.beginIntent(kind: "test", payload: "\(t)-\(i)", now: 1) }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try store.pendingIntents().count == threads * each)
        #expect(store.commitCounts.writes >= threads * each)
    }
}
