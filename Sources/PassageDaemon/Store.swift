import Foundation

/// The daemon's durable state in SQLite (WAL, synchronous=FULL): claims, the IOMMU groups they
/// hold, and intents. Every change to the host is recorded as a pending intent *before* it touches
/// sysfs and marked done (or rolled back) after, so a restart can finish or undo it.
///
/// The invariant "no group is held twice" is the primary key of `group_holds`: two racing claims
/// cannot both commit, whatever the code above does.
///
/// Two connections: reads use their own, so a read never waits for a commit's fsync; every write
/// goes through one `GroupCommitter`, which commits the writes waiting at one moment in one
/// transaction and one fsync (each write still returns only once it is durable). The writes
/// themselves are `Transaction`'s methods; the methods here run one and block until it is durable,
/// `commit(_:)` awaits instead, so the change path keeps working while its write waits for the disk.
public final class Store: @unchecked Sendable {
    private let reader: SQLiteConnection
    private let readLock = NSLock()
    let committer: GroupCommitter
    public let path: String

    /// Schema migrations, in order; `PRAGMA user_version` records how many have run.
    static let migrations: [String] = [
        """
        CREATE TABLE claims (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            idempotency_key TEXT UNIQUE,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            request TEXT NOT NULL,
            error TEXT
        );
        CREATE TABLE claim_devices (
            claim_id TEXT NOT NULL REFERENCES claims(id),
            address TEXT NOT NULL,
            iommu_group INTEGER NOT NULL,
            previous_driver TEXT,
            previous_override TEXT,
            requested INTEGER NOT NULL,
            PRIMARY KEY (claim_id, address)
        );
        CREATE TABLE group_holds (
            iommu_group INTEGER PRIMARY KEY,
            claim_id TEXT NOT NULL REFERENCES claims(id)
        );
        CREATE TABLE intents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            claim_id TEXT,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            finished_at INTEGER
        );
        CREATE INDEX intents_pending ON intents(state) WHERE state = 'pending';
        """,
        // 2: pools, named device selectors (defined over the API, later also by the policy file).
        """
        CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            selector TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        """,
        // 3: VMs started by passaged (passage-vmm children).
        """
        CREATE TABLE vms (
            name TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            claim_id TEXT,
            state TEXT NOT NULL,
            pid INTEGER,
            exit_status INTEGER,
            message TEXT,
            started_at INTEGER NOT NULL,
            ended_at INTEGER
        );
        """,
    ]

    /// Opens (creating if needed) `DIR/state.db` and brings its schema up to date.
    public init(directory: String) throws(StoreError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw StoreError("cannot create the state directory \(directory): \(error.localizedDescription)")
        }
        path = directory + "/state.db"
        let db = try SQLiteConnection(path: path)
        try db.execute("PRAGMA journal_mode=WAL")
        try db.execute("PRAGMA synchronous=FULL")
        try db.execute("PRAGMA foreign_keys=ON")
        let version = Int(try db.query("PRAGMA user_version").first?["user_version"]?.int ?? 0)
        guard version <= Self.migrations.count else {
            throw StoreError("the state database \(path) has schema version \(version), newer than this passaged (\(Self.migrations.count)); run the newer passaged or move the file away")
        }
        for (i, m) in Self.migrations.enumerated() where i >= version {
            try db.transaction { () throws(StoreError) in
                try db.execute(m)
                try db.execute("PRAGMA user_version = \(i + 1)")
            }
        }
        committer = GroupCommitter(db)
        reader = try SQLiteConnection(path: path)
        try reader.execute("PRAGMA query_only=ON")
    }

    public var schemaVersion: Int {
        (try? read { db throws(StoreError) in Int(try db.query("PRAGMA user_version").first?["user_version"]?.int ?? 0) }) ?? 0
    }

    /// Commits so far and the writes they carried (writes / commits: how much group commit batched).
    public var commitCounts: (commits: Int, writes: Int) {
        let c = committer.counts
        return (c.commits, c.writes)
    }

    // MARK: writing

    /// Runs `body` in the next group commit and waits (blocking the calling thread) until it is durable.
    public func write<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws(StoreError) -> T) throws(StoreError) -> T {
        let result = ResultBox<T>()
        try committer.submitAndWait { db throws(StoreError) in result.value = try body(Transaction(db: db)) }
        return result.value!
    }

    /// Runs `body` in the next group commit; returns once it is durable, without holding a thread
    /// meanwhile. `whenDurable` runs first, on the commit queue, in commit order (events published
    /// there come out in the order their changes reached the disk).
    public func commit<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws(StoreError) -> T,
                                    whenDurable: (@Sendable (T) -> Void)? = nil) async throws(StoreError) -> T {
        let box = ResultBox<T>()
        let outcome: Result<T, StoreError> = await withCheckedContinuation { c in
            committer.submit(GroupCommitter.Write(
                apply: { db throws(StoreError) in box.value = try body(Transaction(db: db)) },
                finish: { error in
                    if let error { return c.resume(returning: .failure(error)) }
                    whenDurable?(box.value!)
                    c.resume(returning: .success(box.value!))
                }))
        }
        return try outcome.get()
    }

    private final class ResultBox<T>: @unchecked Sendable { var value: T? }

    // MARK: records

    public struct ClaimRecord: Sendable, Hashable {
        public enum State: String, Sendable, CaseIterable {
            /// Holds recorded, devices being bound (an intent is pending).
            case binding
            case active
            /// Devices being given back (an intent is pending).
            case releasing
            case released
            /// Binding failed or was rolled back at start-up.
            case failed
            /// A device of the claim disappeared from the host.
            case lost
        }
        public var id: String
        public var owner: String
        public var idempotencyKey: String?
        public var state: State
        public var createdAt: Int64
        public var updatedAt: Int64
        public var request: String
        public var error: String?
        public var devices: [ClaimDevice]
        public var groups: [Int] { Array(Set(devices.map(\.iommuGroup))).sorted() }
    }

    public struct ClaimDevice: Sendable, Hashable, Codable {
        public var address: String
        public var iommuGroup: Int
        public var previousDriver: String?
        public var previousOverride: String?
        /// Named or selected by the consumer (false: pulled in because it shares the group).
        public var requested: Bool
    }

    public struct Intent: Sendable, Hashable {
        public var id: Int64
        public var kind: String
        public var claimID: String?
        public var payload: String
    }

    // MARK: claims

    /// Records a new claim in state `binding`, its devices and its group holds, and a pending intent —
    /// in one transaction. Fails with a constraint error when another claim holds one of the groups.
    public func beginClaim(id: String, owner: String, idempotencyKey: String?, request: String,
                           devices: [ClaimDevice], now: Int64) throws(StoreError) -> Int64 {
        try write { tx throws(StoreError) in
            try tx.beginClaim(id: id, owner: owner, idempotencyKey: idempotencyKey, request: request, devices: devices, now: now)
        }
    }

    /// The claim is bound: state active, intent done.
    public func finishClaim(id: String, intent: Int64, now: Int64) throws(StoreError) {
        try write { tx throws(StoreError) in try tx.finishClaim(id: id, intent: intent, now: now) }
    }

    /// The claim could not be bound (or was rolled back at start-up): its holds go, it stays as `failed` for the record.
    public func failClaim(id: String, intent: Int64?, error: String, now: Int64) throws(StoreError) {
        try write { tx throws(StoreError) in try tx.failClaim(id: id, intent: intent, error: error, now: now) }
    }

    /// Starts a release: state releasing, a pending intent.
    public func beginRelease(id: String, now: Int64) throws(StoreError) -> Int64 {
        try write { tx throws(StoreError) in try tx.beginRelease(id: id, now: now) }
    }

    /// The devices are back: holds deleted, state released, intent done.
    public func finishRelease(id: String, intent: Int64, error: String?, now: Int64) throws(StoreError) {
        try write { tx throws(StoreError) in try tx.finishRelease(id: id, intent: intent, error: error, now: now) }
    }

    public func markLost(id: String, error: String, now: Int64) throws(StoreError) {
        try write { tx throws(StoreError) in try tx.markLost(id: id, error: error, now: now) }
    }

    public func claim(id: String) throws(StoreError) -> ClaimRecord? {
        try read { db throws(StoreError) in try Self.loadClaims(db, "WHERE id = ?", [.text(id)]).first }
    }

    public func claim(idempotencyKey: String) throws(StoreError) -> ClaimRecord? {
        try read { db throws(StoreError) in try Self.loadClaims(db, "WHERE idempotency_key = ?", [.text(idempotencyKey)]).first }
    }

    /// Claims, newest first; `states` nil for all.
    public func claims(states: [ClaimRecord.State]? = nil) throws(StoreError) -> [ClaimRecord] {
        try read { db throws(StoreError) in
            guard let states else { return try Self.loadClaims(db, "", []) }
            let marks = states.map { _ in "?" }.joined(separator: ", ")
            return try Self.loadClaims(db, "WHERE state IN (\(marks))", states.map { .text($0.rawValue) })
        }
    }

    /// IOMMU group → the claim holding it.
    public func groupHolds() throws(StoreError) -> [Int: String] {
        try read { db throws(StoreError) in
            var holds: [Int: String] = [:]
            for r in try db.query("SELECT iommu_group, claim_id FROM group_holds") {
                if let g = r["iommu_group"]?.int, let c = r["claim_id"]?.text { holds[Int(g)] = c }
            }
            return holds
        }
    }

    // MARK: pools

    public struct PoolRecord: Sendable, Equatable {
        public var name: String
        /// The selector as JSON (DeviceSelector without `pool`).
        public var selector: String
        /// `api` or `policy`.
        public var source: String
        public var createdAt: Int64
        public var updatedAt: Int64
    }

    /// Creates or replaces a pool; returns whether it was new.
    @discardableResult
    public func putPool(name: String, selector: String, source: String, now: Int64) throws(StoreError) -> Bool {
        try write { tx throws(StoreError) in try tx.putPool(name: name, selector: selector, source: source, now: now) }
    }

    /// Deletes a pool; false when there was none.
    public func deletePool(name: String) throws(StoreError) -> Bool {
        try write { tx throws(StoreError) in try tx.deletePool(name: name) }
    }

    public func pools() throws(StoreError) -> [PoolRecord] {
        try read { db throws(StoreError) in
            try db.query("SELECT name, selector, source, created_at, updated_at FROM pools ORDER BY name").map {
                PoolRecord(name: $0["name"]?.text ?? "", selector: $0["selector"]?.text ?? "{}", source: $0["source"]?.text ?? "api",
                           createdAt: $0["created_at"]?.int ?? 0, updatedAt: $0["updated_at"]?.int ?? 0)
            }
        }
    }

    // MARK: VMs

    public struct VMRecord: Sendable, Equatable {
        public var name: String
        /// The VM's settings as JSON (VMStartRequest).
        public var config: String
        public var claimID: String?
        /// `running`, `stopped` (powered off, reset or stopped), `crashed`, `failed` (the VMM could not start it).
        public var state: String
        public var pid: Int32?
        public var exitStatus: Int32?
        public var message: String?
        public var startedAt: Int64
        public var endedAt: Int64?
    }

    public func putVM(_ v: VMRecord) throws(StoreError) {
        try write { tx throws(StoreError) in try tx.putVM(v) }
    }

    public func vms() throws(StoreError) -> [VMRecord] {
        try read { db throws(StoreError) in
            try db.query("SELECT name, config, claim_id, state, pid, exit_status, message, started_at, ended_at FROM vms ORDER BY name").map {
                VMRecord(name: $0["name"]?.text ?? "", config: $0["config"]?.text ?? "{}", claimID: $0["claim_id"]?.text, state: $0["state"]?.text ?? "failed",
                         pid: $0["pid"]?.int.map { Int32($0) }, exitStatus: $0["exit_status"]?.int.map { Int32($0) }, message: $0["message"]?.text,
                         startedAt: $0["started_at"]?.int ?? 0, endedAt: $0["ended_at"]?.int)
            }
        }
    }

    // MARK: intents

    public func pendingIntents() throws(StoreError) -> [Intent] {
        try read { db throws(StoreError) in
            try db.query("SELECT id, kind, claim_id, payload FROM intents WHERE state = 'pending' ORDER BY id").map {
                Intent(id: $0["id"]?.int ?? 0, kind: $0["kind"]?.text ?? "", claimID: $0["claim_id"]?.text, payload: $0["payload"]?.text ?? "")
            }
        }
    }

    /// Records a pending intent that belongs to no claim (bind, restore, VF changes).
    public func beginIntent(kind: String, payload: String, now: Int64) throws(StoreError) -> Int64 {
        try write { tx throws(StoreError) in try tx.insertIntent(kind: kind, claimID: nil, payload: payload, now: now) }
    }

    /// Replaces a pending intent's payload: what an operation learned it must undo, recorded before
    /// it changes that.
    public func updateIntentPayload(_ id: Int64, payload: String) throws(StoreError) {
        try write { tx throws(StoreError) in _ = try tx.db.query("UPDATE intents SET payload = ? WHERE id = ?", [.text(payload), .int(id)]) }
    }

    public func endIntent(_ id: Int64, state: String, now: Int64) throws(StoreError) {
        try write { tx throws(StoreError) in try tx.finishIntent(id, state: state, now: now) }
    }

    // MARK: reading

    private func read<T>(_ body: (SQLiteConnection) throws(StoreError) -> T) throws(StoreError) -> T {
        readLock.lock()
        defer { readLock.unlock() }
        return try body(reader)
    }

    private static func loadClaims(_ db: SQLiteConnection, _ whereClause: String, _ values: [SQLiteConnection.Value]) throws(StoreError) -> [ClaimRecord] {
        let rows = try db.query("SELECT * FROM claims \(whereClause) ORDER BY created_at DESC, id", values)
        var result: [ClaimRecord] = []
        for r in rows {
            let id = r["id"]?.text ?? ""
            let devices = try db.query("SELECT * FROM claim_devices WHERE claim_id = ? ORDER BY address", [.text(id)]).map {
                ClaimDevice(address: $0["address"]?.text ?? "", iommuGroup: Int($0["iommu_group"]?.int ?? -1),
                            previousDriver: $0["previous_driver"]?.text, previousOverride: $0["previous_override"]?.text,
                            requested: $0["requested"]?.int == 1)
            }
            result.append(ClaimRecord(id: id, owner: r["owner"]?.text ?? "", idempotencyKey: r["idempotency_key"]?.text,
                                      state: ClaimRecord.State(rawValue: r["state"]?.text ?? "") ?? .failed,
                                      createdAt: r["created_at"]?.int ?? 0, updatedAt: r["updated_at"]?.int ?? 0,
                                      request: r["request"]?.text ?? "", error: r["error"]?.text, devices: devices))
        }
        return result
    }
}

extension Store {
    /// The writes, each run inside a group commit's transaction (in a savepoint of its own): a
    /// write that throws leaves nothing behind, and none is durable before its commit returns.
    public struct Transaction {
        let db: SQLiteConnection

        public func beginClaim(id: String, owner: String, idempotencyKey: String?, request: String,
                               devices: [ClaimDevice], now: Int64) throws(StoreError) -> Int64 {
            try db.query("INSERT INTO claims (id, owner, idempotency_key, state, created_at, updated_at, request) VALUES (?, ?, ?, 'binding', ?, ?, ?)",
                         [.text(id), .text(owner), idempotencyKey.map { .text($0) } ?? .null, .int(now), .int(now), .text(request)])
            for g in Set(devices.map(\.iommuGroup)).sorted() {
                try db.query("INSERT INTO group_holds (iommu_group, claim_id) VALUES (?, ?)", [.int(Int64(g)), .text(id)])
            }
            for d in devices {
                try db.query("INSERT INTO claim_devices (claim_id, address, iommu_group, previous_driver, previous_override, requested) VALUES (?, ?, ?, ?, ?, ?)",
                             [.text(id), .text(d.address), .int(Int64(d.iommuGroup)), d.previousDriver.map { .text($0) } ?? .null,
                              d.previousOverride.map { .text($0) } ?? .null, .int(d.requested ? 1 : 0)])
            }
            return try insertIntent(kind: "claim", claimID: id, payload: id, now: now)
        }

        public func finishClaim(id: String, intent: Int64, now: Int64) throws(StoreError) {
            try db.query("UPDATE claims SET state = 'active', updated_at = ? WHERE id = ?", [.int(now), .text(id)])
            try finishIntent(intent, state: "done", now: now)
        }

        public func failClaim(id: String, intent: Int64?, error: String, now: Int64) throws(StoreError) {
            try db.query("DELETE FROM group_holds WHERE claim_id = ?", [.text(id)])
            try db.query("UPDATE claims SET state = 'failed', error = ?, updated_at = ?, idempotency_key = NULL WHERE id = ?",
                         [.text(error), .int(now), .text(id)])
            if let intent { try finishIntent(intent, state: "rolled-back", now: now) }
        }

        public func beginRelease(id: String, now: Int64) throws(StoreError) -> Int64 {
            try db.query("UPDATE claims SET state = 'releasing', updated_at = ? WHERE id = ?", [.int(now), .text(id)])
            return try insertIntent(kind: "release", claimID: id, payload: id, now: now)
        }

        public func finishRelease(id: String, intent: Int64, error: String?, now: Int64) throws(StoreError) {
            try db.query("DELETE FROM group_holds WHERE claim_id = ?", [.text(id)])
            try db.query("UPDATE claims SET state = 'released', error = ?, updated_at = ? WHERE id = ?",
                         [error.map { .text($0) } ?? .null, .int(now), .text(id)])
            try finishIntent(intent, state: "done", now: now)
        }

        /// A release that could not put every device back (and undid what it did): the claim is
        /// `state` again (active or lost) and keeps its holds; the intent is rolled back.
        public func abortRelease(id: String, intent: Int64, state: ClaimRecord.State, now: Int64) throws(StoreError) {
            try db.query("UPDATE claims SET state = ?, updated_at = ? WHERE id = ?", [.text(state.rawValue), .int(now), .text(id)])
            try finishIntent(intent, state: "rolled-back", now: now)
        }

        public func markLost(id: String, error: String, now: Int64) throws(StoreError) {
            try db.query("UPDATE claims SET state = 'lost', error = ?, updated_at = ? WHERE id = ?", [.text(error), .int(now), .text(id)])
        }

        public func putPool(name: String, selector: String, source: String, now: Int64) throws(StoreError) -> Bool {
            let existed = try !db.query("SELECT name FROM pools WHERE name = ?", [.text(name)]).isEmpty
            try db.query("""
                INSERT INTO pools (name, selector, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET selector = excluded.selector, source = excluded.source, updated_at = excluded.updated_at
                """, [.text(name), .text(selector), .text(source), .int(now), .int(now)])
            return !existed
        }

        public func deletePool(name: String) throws(StoreError) -> Bool {
            let existed = try !db.query("SELECT name FROM pools WHERE name = ?", [.text(name)]).isEmpty
            try db.query("DELETE FROM pools WHERE name = ?", [.text(name)])
            return existed
        }

        public func putVM(_ v: VMRecord) throws(StoreError) {
            try db.query("""
                INSERT INTO vms (name, config, claim_id, state, pid, exit_status, message, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET config = excluded.config, claim_id = excluded.claim_id, state = excluded.state, pid = excluded.pid,
                    exit_status = excluded.exit_status, message = excluded.message, started_at = excluded.started_at, ended_at = excluded.ended_at
                """, [.text(v.name), .text(v.config), v.claimID.map { .text($0) } ?? .null, .text(v.state), v.pid.map { .int(Int64($0)) } ?? .null,
                      v.exitStatus.map { .int(Int64($0)) } ?? .null, v.message.map { .text($0) } ?? .null, .int(v.startedAt), v.endedAt.map { .int($0) } ?? .null])
        }

        public func insertIntent(kind: String, claimID: String?, payload: String, now: Int64) throws(StoreError) -> Int64 {
            let rows = try db.query("INSERT INTO intents (kind, claim_id, payload, state, created_at) VALUES (?, ?, ?, 'pending', ?) RETURNING id",
                                    [.text(kind), claimID.map { .text($0) } ?? .null, .text(payload), .int(now)])
            return rows.first?["id"]?.int ?? 0
        }

        public func finishIntent(_ id: Int64, state: String, now: Int64) throws(StoreError) {
            try db.query("UPDATE intents SET state = ?, finished_at = ? WHERE id = ?", [.text(state), .int(now), .int(id)])
        }
    }
}
