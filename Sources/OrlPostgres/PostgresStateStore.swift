public import OrlCore

/// The actual state in a PostgreSQL database: the `StateStore` port, as `SQLiteStateStore`
/// implements it, for a state shared by several machines.
///
/// **Transactions.** A `write` is one transaction on one leased connection that first
/// takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`), so writers, in
/// any process on any machine, run one after another as SQLite's `BEGIN IMMEDIATE` makes
/// them: the body then reads everything committed before it (READ COMMITTED, each
/// statement after the lock sees the latest commits, and no other writer can commit
/// meanwhile), generations and versions computed from those reads cannot race, and
/// event and apply numbers are assigned in commit order (the alert outbox's cursor relies
/// on it). The body's writes land together at COMMIT, or not at all: an error, a lost
/// connection or a timeout rolls the transaction back. A `read` is a REPEATABLE READ,
/// READ ONLY transaction: one snapshot, no lock, and writing in it is refused.
///
/// **Threads.** Calls block their thread until PostgreSQL answers, as SQLite's do; see
/// `PostgresPool` for why that is safe from any thread and how every wait is bounded.
/// Do not call the store from inside one of its own bodies (it would lease a second
/// connection and, for a write, wait for its own lock until the lock timeout).
public final class PostgresStateStore: StateStore {
    public let url: PostgresURL
    let pool: PostgresPool

    /// Connects to the database and migrates it to this binary's schema.
    public init(url: PostgresURL, maxConnections: Int = 4, timeout: Duration = .seconds(30)) throws(StoreError) {
        self.url = url
        self.pool = try PostgresPool(url: url, maxConnections: maxConnections, queryTimeout: timeout, leaseTimeout: timeout)
        try pool.withConnection(intent: "open the PostgreSQL state") { session throws(StoreError) in
            try PostgresSchema.migrate(session)
        }
    }

    /// Parses `url` (see `PostgresURL`), then opens it.
    public convenience init(url text: String, environment: [String: String] = [:]) throws(StoreError) {
        try self.init(url: PostgresURL(parsing: text, environment: environment))
    }

    public func read<T>(_ body: (any StateReader) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(writable: false, intent: "read the state", body)
    }

    public func write<T>(_ body: (any StateWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(writable: true, intent: "write the state", body)
    }

    func transaction<T>(writable: Bool, intent: String, _ body: (PostgresAccess) throws(StoreError) -> T) throws(StoreError) -> T {
        switch try transactionOnce(writable: writable, intent: intent, body) {
        case .done(let value): return value
        case .stale:
            // An idle connection the server ended (a restart, a failover, an administrator)
            // fails at BEGIN, before anything was done: once more, on a new connection.
            switch try transactionOnce(writable: writable, intent: intent, body) {
            case .done(let value): return value
            case .stale(let error): throw error
            }
        }
    }

    private enum Attempt<T> {
        case done(T)
        /// BEGIN failed on a connection that turned out closed: nothing was done.
        case stale(StoreError)
    }

    private func transactionOnce<T>(writable: Bool, intent: String, _ body: (PostgresAccess) throws(StoreError) -> T) throws(StoreError)
        -> Attempt<T>
    {
        try pool.withConnection(intent: intent) { session throws(StoreError) -> Attempt<T> in
            // BEGIN is sent without waiting for its answer, which comes with the next
            // statement's: the write lock's, or the body's first (a round trip and a wake-up
            // of this thread fewer per transaction).
            do throws(StoreError) {
                if writable {
                    try session.send("BEGIN ISOLATION LEVEL READ COMMITTED", intent: intent, preamble: true)
                    try session.execute("SELECT pg_advisory_xact_lock($1)", [.int(PostgresSchema.LockKey.write)], intent: intent)
                } else {
                    try session.send("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", intent: intent, preamble: true)
                }
            } catch {
                if session.isBroken {
                    guard session.preambleFailed else { throw error }
                    return .stale(error)
                }
                _ = try? session.execute("ROLLBACK", intent: intent)
                throw error
            }
            let access = PostgresAccess(session, writable: writable)
            defer { access.close() }
            do throws(StoreError) {
                let value = try body(access)
                try access.flush()
                if writable {
                    try access.countRunChanges()
                    try session.execute("COMMIT", intent: intent)
                } else {
                    // A read's COMMIT changes nothing and cannot fail but with the connection:
                    // its answer is left to the connection's next statement, whichever lease
                    // sends it (which then sees the failure as a stale connection's).
                    try session.send("COMMIT", intent: intent, preamble: true)
                }
                return .done(value)
            } catch {
                // A read's BEGIN (or the read before it's COMMIT) that failed with the
                // connection fails its body's first statement: nothing was read yet, so the
                // read is run again on a new connection as when BEGIN was waited for.
                if session.isBroken && session.preambleFailed { return .stale(error) }
                // A lost connection has rolled back already; otherwise roll back here, so the
                // connection goes back to the pool outside any transaction.
                if !session.isBroken { _ = try? session.execute("ROLLBACK", intent: intent) }
                throw error
            }
        }
    }
}

/// What `orlctl describe state` and `gc` show of a PostgreSQL state.
public struct PostgresStateInfo: Sendable {
    public struct Table: Sendable {
        public var name: String
        public var rows: Int
        /// Table, indexes and TOAST, on disk.
        public var bytes: Int
    }

    public var serverVersion: String
    public var schemaVersion: Int
    public var tables: [Table]
    public var databaseBytes: Int
}

extension PostgresStateStore {
    public func info() throws(StoreError) -> PostgresStateInfo {
        try transaction(writable: false, intent: "describe the PostgreSQL state") { access throws(StoreError) in
            let session = try access.connection()
            let intent = "describe the PostgreSQL state"
            let head = try session.query(
                """
                SELECT current_setting('server_version')::text, (SELECT coalesce(max(version), 0) FROM schema_migrations)::bigint,
                    pg_database_size(current_database())::bigint
                """, intent: intent)
            guard let row = head.first else { throw StoreError("cannot \(intent): no answer") }
            var tables: [PostgresStateInfo.Table] = []
            for table in try session.query(
                """
                SELECT c.relname::text, pg_total_relation_size(c.oid)::bigint
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY c.relname
                """, intent: intent)
            {
                let name = try table.text(0)
                // Counted, not estimated: reltuples is unknown until the table is first vacuumed.
                let rows = try session.query("SELECT count(*)::bigint FROM \"\(name.replacing("\"", with: "\"\""))\"", intent: intent)
                tables.append(.init(name: name, rows: try rows.first?.int(0) ?? 0, bytes: try table.int(1)))
            }
            return PostgresStateInfo(
                serverVersion: try row.text(0), schemaVersion: try row.int(1), tables: tables, databaseBytes: try row.int(2))
        }
    }
}
