import CSQLite
import Foundation

/// A thin owner of one SQLite connection: statements with bound values, rows as dictionaries of
/// typed values, transactions. Errors name the statement and SQLite's message. Statements are
/// prepared once per SQL text and kept (the daemon runs a few dozen distinct ones, over and over).
/// Not thread-safe: its owner serializes the calls.
final class SQLiteConnection {
    private var db: OpaquePointer?
    let path: String
    private var prepared: [String: OpaquePointer] = [:]
    /// More distinct statements than this (SQL built from variable parts) empties the cache.
    static let maxPrepared = 128

    init(path: String) throws(StoreError) {
        self.path = path
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw StoreError("cannot open the state database \(path): \(message); check that the state directory exists and is writable by passaged")
        }
        db = handle
        sqlite3_busy_timeout(handle, 5000)
    }

    deinit {
        for stmt in prepared.values { sqlite3_finalize(stmt) }
        sqlite3_close_v2(db)
    }

    enum Value: Sendable, Equatable {
        case null, int(Int64), text(String)
        var int: Int64? { if case let .int(v) = self { v } else { nil } }
        var text: String? { if case let .text(v) = self { v } else { nil } }
    }

    func execute(_ sql: String) throws(StoreError) {
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(err)
            throw StoreError("SQLite: \(message) in: \(sql.prefix(120))")
        }
    }

    /// Runs one statement with positional values; returns its rows (column name → value).
    @discardableResult
    func query(_ sql: String, _ values: [Value] = []) throws(StoreError) -> [[String: Value]] {
        let stmt = try statement(sql)
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        for (i, v) in values.enumerated() {
            let idx = Int32(i + 1)
            switch v {
            case .null: sqlite3_bind_null(stmt, idx)
            case let .int(x): sqlite3_bind_int64(stmt, idx, x)
            case let .text(s): sqlite3_bind_text(stmt, idx, s, -1, passage_sqlite_transient())
            }
        }
        var rows: [[String: Value]] = []
        var names: [String] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else {
                let code = sqlite3_extended_errcode(db)
                throw StoreError("SQLite: \(String(cString: sqlite3_errmsg(db))) in: \(sql.prefix(120))", constraint: code & 0xff == SQLITE_CONSTRAINT)
            }
            if names.isEmpty { names = (0..<sqlite3_column_count(stmt)).map { String(cString: sqlite3_column_name(stmt, $0)) } }
            var row: [String: Value] = Dictionary(minimumCapacity: names.count)
            for (c, name) in zip(Int32(0)..., names) {
                switch sqlite3_column_type(stmt, c) {
                case SQLITE_INTEGER: row[name] = .int(sqlite3_column_int64(stmt, c))
                case SQLITE_NULL: row[name] = .null
                default: row[name] = .text(String(cString: sqlite3_column_text(stmt, c)))
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// The prepared statement for `sql`, from the cache or prepared now.
    private func statement(_ sql: String) throws(StoreError) -> OpaquePointer {
        if let stmt = prepared[sql] { return stmt }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK, let stmt else {
            throw StoreError("SQLite: \(String(cString: sqlite3_errmsg(db))) in: \(sql.prefix(120))")
        }
        if prepared.count >= Self.maxPrepared {
            for old in prepared.values { sqlite3_finalize(old) }
            prepared.removeAll()
        }
        prepared[sql] = stmt
        return stmt
    }

    /// BEGIN IMMEDIATE … COMMIT, rolled back when the body throws.
    func transaction<T>(_ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

public struct StoreError: Error, Sendable, CustomStringConvertible {
    public let message: String
    /// A UNIQUE/PRIMARY KEY constraint refused the write.
    public let constraint: Bool
    public init(_ message: String, constraint: Bool = false) {
        self.message = message
        self.constraint = constraint
    }
    public var description: String { message }
}
