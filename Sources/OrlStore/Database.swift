import CSQLite
import Glibc
import OrlCore
import Synchronization

/// One SQLite connection, and the statements prepared on it.
///
/// Not thread-safe, on purpose: the connection is opened with `SQLITE_OPEN_NOMUTEX`
/// and its owner (`SQLiteStateStore`) lets one thread at a time use it, so SQLite's
/// own per-call mutex would only add cost.
///
/// Every failure is a `StoreError` that says what was being done (the statement's
/// intent, such as "store Agent/writer"), SQLite's own message, and the file.
final class Database {
    let path: String
    private let handle: OpaquePointer
    /// Statements prepared once and reused (reset between uses), keyed by their SQL.
    private var statements: [String: Statement] = [:]
    /// The same statements, by the identity of their `SQL` key.
    private var keyed: [ObjectIdentifier: Statement] = [:]
    /// While set, a commit that brings the WAL to `checkpointPages` leaves the checkpoint
    /// due (`checkpointDue`) instead of making it: a write that must not block (on an
    /// event loop) would otherwise copy pages into the database file and sync both files.
    var defersCheckpoints = false
    /// A commit made while `defersCheckpoints` was set found the WAL due a checkpoint;
    /// `checkpointIfDue` makes it.
    private(set) var checkpointDue = false
    /// SQLite's own automatic checkpoint threshold (`wal_autocheckpoint`'s default),
    /// which the connection's WAL hook keeps, as SQLite's would, when nothing defers it.
    static let checkpointPages: Int32 = 1000
    /// This process's commits to the database at `path` (in WAL mode), counted by every
    /// connection of it.
    final class CommitCount: Sendable {
        let value = Atomic<UInt64>(0)
    }
    private static let commitCounts = Mutex<[String: CommitCount]>([:])
    static func commitCount(_ path: String) -> CommitCount {
        commitCounts.withLock { counts in
            if let count = counts[path] { return count }
            let count = CommitCount()
            counts[path] = count
            return count
        }
    }
    private let commits: CommitCount
    /// The WAL's size in pages at which a commit checkpoints: `checkpointPages`, or less
    /// for a connection whose close leaves the WAL (`closeWithoutCheckpoint`), since each
    /// process that opens the database then reads the whole WAL back.
    private var checkpointAt = Database.checkpointPages
    /// What `closeWithoutCheckpoint` lets the WAL grow to: a sync of one file among
    /// 10,000 writes about 30 pages, so a checkpoint every ninth or so, and a process
    /// reads back 130 pages on average (about a millisecond).
    static let checkpointPagesWithoutCheckpointAtClose: Int32 = 256
    /// Opens the database file at `path`, creating it when missing if `create`.
    init(path: String, create: Bool = true) throws(StoreError) {
        self.path = path
        commits = Self.commitCount(path)
        try SQLiteLibrary.load()
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let code = sqlite3_open_v2(path, &handle, flags, nil)
        guard let handle else {
            throw StoreError(
                "could not open the state database \(path): \(String(cString: sqlite3_errstr(code)))", resultCode: code,
                isBusy: Self.isBusy(code))
        }
        guard code == SQLITE_OK else {
            let message = String(cString: sqlite3_errmsg(handle))
            let extended = sqlite3_extended_errcode(handle)
            sqlite3_close_v2(handle)
            throw StoreError("could not open the state database \(path): \(message)", resultCode: extended, isBusy: Self.isBusy(extended))
        }
        self.handle = handle
        // In place of SQLite's automatic checkpoint (itself a WAL hook, which this one
        // replaces), so that a commit can leave its checkpoint to a thread that may block.
        sqlite3_wal_hook(handle, walHook, Unmanaged.passUnretained(self).toOpaque())
    }

    /// After each commit, with the pages now in the WAL: the checkpoint SQLite's
    /// automatic one would make (passive: it waits for no reader or writer), or, while
    /// checkpoints are deferred, a note that it is due.
    fileprivate func committed(walPages: Int32, schema: UnsafePointer<CChar>?) {
        commits.value.add(1, ordering: .relaxed)
        guard walPages >= checkpointAt else { return }
        if defersCheckpoints {
            checkpointDue = true
        } else {
            checkpointDue = false
            checkpoint(schema)
        }
    }

    /// Makes the checkpoint a deferred commit left due, if any (passive, as SQLite's
    /// automatic one: a failure, such as a reader in the way, leaves it to a later commit).
    func checkpointIfDue() {
        guard checkpointDue, !isInTransaction else { return }
        checkpointDue = false
        checkpoint(nil)
    }

    /// Passive, as SQLite's automatic checkpoint: it waits for no reader or writer. A
    /// connection whose close leaves the WAL also empties the WAL when no reader is on it
    /// (SQLITE_CHECKPOINT_TRUNCATE, without waiting): the WAL index does not outlive the
    /// last connection, so the next process would otherwise read back every frame of the
    /// WAL as not yet checkpointed, and copy them all again at its own commit.
    private func checkpoint(_ schema: UnsafePointer<CChar>?) {
        guard checkpointAt == Self.checkpointPagesWithoutCheckpointAtClose else {
            sqlite3_wal_checkpoint(handle, schema)
            return
        }
        sqlite3_busy_timeout(handle, 0)
        sqlite3_wal_checkpoint_v2(handle, schema, SQLITE_CHECKPOINT_TRUNCATE, nil, nil)
        sqlite3_busy_timeout(handle, busyTimeout)
    }

    deinit {
        for statement in statements.values { statement.finalize() }
        sqlite3_wal_hook(handle, nil, nil)
        sqlite3_close_v2(handle)
    }

    /// For a connection that its process closes soon after its write: each commit syncs
    /// the WAL (`synchronous = FULL`), so a write is durable when it returns, and the close
    /// neither checkpoints the WAL nor removes it and its index. The next connection to
    /// open the database reads the WAL back (its index is rebuilt), and the WAL is folded
    /// into the database file by the checkpoint of a commit that brings it to
    /// `checkpointPagesWithoutCheckpointAtClose`, or by the close of a connection that
    /// checkpoints.
    func closeWithoutCheckpoint() throws(StoreError) {
        try execute("PRAGMA synchronous = FULL", intent: "set synchronous mode")
        let code = orl_sqlite_no_checkpoint_on_close(handle)
        guard code == SQLITE_OK else { throw error(code, intent: "leave the checkpoint at close to a later connection") }
        checkpointAt = Self.checkpointPagesWithoutCheckpointAtClose
    }

    /// How long a statement waits for another connection's lock before failing with
    /// SQLITE_BUSY (SQLite sleeps and retries meanwhile).
    func setBusyTimeout(milliseconds: Int32) {
        busyTimeout = milliseconds
        sqlite3_busy_timeout(handle, milliseconds)
    }

    /// The busy timeout last set, in milliseconds.
    private var busyTimeout: Int32 = 0

    /// Rows the last statement inserted, updated or deleted.
    var changes: Int { Int(sqlite3_changes(handle)) }

    /// Whether a transaction is open (SQLite is not in autocommit mode).
    var isInTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    /// The rowid of the last row inserted on this connection.
    var lastInsertedRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Runs statements that take no parameters and return nothing of interest:
    /// pragmas, transaction control, migrations.
    func execute(_ sql: String, intent: @autoclosure () -> String) throws(StoreError) {
        let code = sqlite3_exec(handle, sql, nil, nil, nil)
        guard code == SQLITE_OK else { throw error(code, intent: intent()) }
    }

    /// Runs `body` with the statement for `sql`, prepared on first use and kept for the
    /// life of the connection. The statement is reset and its bindings cleared when
    /// `body` returns, so no read stays open by accident (an unreset statement would
    /// keep its snapshot, and its locks, alive past the transaction).
    func withStatement<R>(
        _ sql: String, intent: @autoclosure () -> String, _ body: (Statement) throws(StoreError) -> R
    ) throws(StoreError) -> R {
        let statement: Statement
        if let cached = statements[sql] {
            statement = cached
        } else {
            var prepared: OpaquePointer?
            let code = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &prepared, nil)
            guard code == SQLITE_OK, let prepared else { throw error(code, intent: "prepare to \(intent())") }
            statement = Statement(handle: prepared, database: self)
            statements[sql] = statement
        }
        defer { statement.reset() }
        return try body(statement)
    }

    /// `withStatement` for a statement run once per row (a resource, an event): found by
    /// its key's identity, not by hashing its text on every use.
    func withStatement<R>(
        _ sql: SQL, intent: @autoclosure () -> String, _ body: (Statement) throws(StoreError) -> R
    ) throws(StoreError) -> R {
        let statement: Statement
        if let cached = keyed[ObjectIdentifier(sql)] {
            statement = cached
        } else {
            statement = try withStatement(sql.text, intent: intent()) { $0 }
            keyed[ObjectIdentifier(sql)] = statement
        }
        defer { statement.reset() }
        return try body(statement)
    }

    /// Runs `sql`, which takes no parameters and returns no rows, on its kept statement.
    private func run(_ sql: String, intent: @autoclosure () -> String) throws(StoreError) {
        try withStatement(sql, intent: intent()) { statement throws(StoreError) in try statement.run(intent: intent()) }
    }

    /// Runs `sql`, which takes no parameters, and returns the first column of its first row.
    func scalar(_ sql: String, intent: @autoclosure () -> String) throws(StoreError) -> Int64? {
        let intent = intent()
        return try withStatement(sql, intent: intent) { statement throws(StoreError) in
            try statement.step(intent: intent) ? statement.optionalInt64(0) : nil
        }
    }

    /// Sets the journal mode (`PRAGMA journal_mode`) when `mode` is given, and returns
    /// the one in force afterwards, in lowercase: the old one when SQLite could not
    /// change it (another connection has the file open, say).
    func journalMode(_ mode: String?) throws(StoreError) -> String {
        // PRAGMA takes no parameters; the modes are this code's constants.
        let sql = mode.map { "PRAGMA journal_mode = \($0)" } ?? "PRAGMA journal_mode"
        let intent = mode.map { "switch to \($0) journal mode" } ?? "read the journal mode"
        return try withStatement(sql, intent: intent) { statement throws(StoreError) in
            try statement.step(intent: intent) ? statement.text(0).lowercased() : ""
        }
    }

    enum TransactionMode: String {
        /// Takes no lock until the first statement; a read transaction sees one snapshot.
        case deferred = "DEFERRED"
        /// Takes the write lock at once, waiting up to the busy timeout for it. A writer
        /// must start this way: a deferred transaction that reads and then writes gets
        /// SQLITE_BUSY at once, with no waiting, when another writer committed in between.
        case immediate = "IMMEDIATE"
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it (or
    /// the commit) throws. No transaction is left open either way.
    func transaction<R>(
        _ mode: TransactionMode, intent: String, _ body: () throws(StoreError) -> R
    ) throws(StoreError) -> R {
        // BEGIN and COMMIT prepared once, as the statements between them are: through
        // sqlite3_exec each was parsed again at every transaction, two of a step's dozen.
        try run(mode == .immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED", intent: "begin a transaction to \(intent)")
        do {
            let result = try body()
            try run("COMMIT", intent: "commit (\(intent))")
            return result
        } catch {
            // ROLLBACK cannot fail in a way that leaves the transaction open; SQLite may
            // also have rolled back already (after SQLITE_FULL, for one).
            if isInTransaction { sqlite3_exec(handle, "ROLLBACK", nil, nil, nil) }
            throw error
        }
    }

    /// The error for a failed call, with SQLite's message when it is about that call.
    func error(_ code: Int32, intent: String) -> StoreError {
        if Self.isBusy(code) {
            return StoreError(
                "could not \(intent): the state database \(path) stayed locked by another orlctl or controller "
                    + "past the busy timeout; try again when it has finished", resultCode: code, isBusy: true)
        }
        let message = String(cString: sqlite3_errmsg(handle))
        return StoreError("could not \(intent): \(message) (SQLite error \(code), in \(path))", resultCode: code)
    }

    /// A lock held by another connection (SQLITE_BUSY, SQLITE_LOCKED and their extended
    /// codes): the only failure worth retrying (a corrupt file or a full disk stays so).
    static func isBusy(_ code: Int32) -> Bool { code & 0xFF == SQLITE_BUSY || code & 0xFF == SQLITE_LOCKED }
}

/// The WAL hook of every connection (see `Database.committed`); its argument is the
/// `Database`, which removes the hook before it closes the connection.
private func walHook(
    _ context: UnsafeMutableRawPointer?, _ handle: OpaquePointer?, _ schema: UnsafePointer<CChar>?, _ pages: Int32
) -> Int32 {
    guard let context else { return SQLITE_OK }
    Unmanaged<Database>.fromOpaque(context).takeUnretainedValue().committed(walPages: pages, schema: schema)
    return SQLITE_OK
}

/// The text of a statement that `Database` keeps prepared, made once (a `static let`),
/// so that it is found again by the key's identity.
final class SQL: Sendable {
    let text: String
    init(_ text: String) { self.text = text }
}

/// A prepared statement. Parameters are numbered from 1 and columns from 0, as in
/// SQLite's C API.
final class Statement {
    private let handle: OpaquePointer
    private unowned let database: Database

    fileprivate init(handle: OpaquePointer, database: Database) {
        self.handle = handle
        self.database = database
    }

    fileprivate func finalize() { sqlite3_finalize(handle) }

    /// Makes the statement ready to run again, with no parameters bound.
    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    // MARK: Binding

    /// Binds the UTF-8 bytes of `text` with their length, so any size and any content
    /// (NUL included) round-trips. SQLite copies the bytes (`SQLITE_TRANSIENT`): the
    /// pointer is only valid inside `withUTF8`, and a copy of a manifest costs nothing
    /// next to writing it.
    func bind(_ index: Int32, _ text: String) throws(StoreError) {
        var text = text
        let code = text.withUTF8 { bytes in
            // An empty buffer may have no address, and a null pointer binds NULL:
            // point at a static empty string instead.
            let empty: StaticString = ""
            let start = UnsafeRawPointer(bytes.baseAddress ?? empty.utf8Start).assumingMemoryBound(to: CChar.self)
            return sqlite3_bind_text64(
                handle, index, start, sqlite3_uint64(bytes.count), orl_sqlite_transient(), UInt8(SQLITE_UTF8))
        }
        try check(code, binding: index)
    }

    func bind(_ index: Int32, _ text: String?) throws(StoreError) {
        if let text { try bind(index, text) } else { try check(sqlite3_bind_null(handle, index), binding: index) }
    }

    /// Binds bytes as a BLOB (copied, as text is).
    func bind(_ index: Int32, blob bytes: [UInt8]) throws(StoreError) {
        let code = bytes.withUnsafeBytes { buffer in
            // A zero-length BLOB needs an address too: a null pointer binds NULL.
            let empty: StaticString = ""
            return sqlite3_bind_blob64(
                handle, index, buffer.baseAddress ?? UnsafeRawPointer(empty.utf8Start), sqlite3_uint64(buffer.count),
                orl_sqlite_transient())
        }
        try check(code, binding: index)
    }

    func bind(_ index: Int32, _ integer: Int64) throws(StoreError) {
        try check(sqlite3_bind_int64(handle, index, integer), binding: index)
    }

    func bind(_ index: Int32, _ integer: Int) throws(StoreError) { try bind(index, Int64(integer)) }

    /// A resource's key, the primary key of most tables: kind, namespace and name in
    /// parameters `first`, `first + 1` and `first + 2`.
    func bind(_ first: Int32, _ id: ResourceID) throws(StoreError) {
        try bind(first, id.kind)
        try bind(first + 1, id.namespace)
        try bind(first + 2, id.name)
    }

    func bind(_ index: Int32, _ real: Double) throws(StoreError) {
        try check(sqlite3_bind_double(handle, index, real), binding: index)
    }

    func bind(_ index: Int32, _ integer: Int64?) throws(StoreError) {
        if let integer { try bind(index, integer) } else { try check(sqlite3_bind_null(handle, index), binding: index) }
    }

    private func check(_ code: Int32, binding index: Int32) throws(StoreError) {
        guard code == SQLITE_OK else { throw database.error(code, intent: "bind parameter \(index) of \(sqlText)") }
    }

    // MARK: Stepping

    /// Advances to the next row: true when there is one, false when done.
    func step(intent: @autoclosure () -> String) throws(StoreError) -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code: throw database.error(code, intent: intent())
        }
    }

    /// Runs a statement that returns no rows.
    func run(intent: @autoclosure () -> String) throws(StoreError) {
        while try step(intent: intent()) {}
    }

    // MARK: Columns

    func text(_ column: Int32) -> String {
        // sqlite3_column_text first, then _bytes: the documented order for a length
        // that matches the returned pointer.
        guard let start = sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    }

    func optionalText(_ column: Int32) -> String? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : text(column)
    }

    func blob(_ column: Int32) -> [UInt8] {
        // _blob first, then _bytes, as for text.
        guard let start = sqlite3_column_blob(handle, column) else { return [] }
        let count = Int(sqlite3_column_bytes(handle, column))
        return Array(UnsafeRawBufferPointer(start: start, count: count))
    }

    /// `blob(column)` where SQLite holds it, valid only during `body` (and only until the
    /// statement steps or resets).
    func withBlob<R>(_ column: Int32, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        guard let start = sqlite3_column_blob(handle, column) else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
        return body(UnsafeBufferPointer(start: start.assumingMemoryBound(to: UInt8.self), count: Int(sqlite3_column_bytes(handle, column))))
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(handle, column)) }

    func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }

    func optionalInt64(_ column: Int32) -> Int64? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : int64(column)
    }

    private var sqlText: String { sqlite3_sql(handle).map { String(cString: $0) } ?? "a statement" }
}

/// Values of any column, for moving whole tables (`StateTables`).
extension Statement {
    var columnCount: Int32 { sqlite3_column_count(handle) }

    func value(_ column: Int32) -> TableValue {
        switch sqlite3_column_type(handle, column) {
        case SQLITE_NULL: .null
        case SQLITE_INTEGER: .integer(int64(column))
        case SQLITE_FLOAT: .real(double(column))
        case SQLITE_BLOB: .blob(blob(column))
        default: .text(text(column))
        }
    }

    func bind(_ index: Int32, value: TableValue) throws(StoreError) {
        switch value {
        case .null: try bind(index, Int64?.none)
        case .integer(let n): try bind(index, n)
        case .real(let d): try bind(index, d)
        case .text(let s): try bind(index, s)
        case .blob(let b): try bind(index, blob: b)
        }
    }
}

/// The SQLite library, opened when a database first is rather than at every start.
public enum SQLiteLibrary {
    /// The library this process loads.
    public static let soname = String(cString: orl_sqlite_soname())

    /// Why SQLite cannot be used in this process, or nil once it is loaded.
    private static let unavailable: String? = orl_sqlite_load().map { String(cString: $0) }

    static func load() throws(StoreError) {
        if let unavailable { throw StoreError(unavailable) }
    }

    /// Whether the library at `soname` could serve as SQLite here (it loads and has every
    /// function orl calls): nil if so, else why not. Nothing is left loaded.
    public static func check(_ soname: String) -> String? {
        guard let message = orl_sqlite_check(soname) else { return nil }
        defer { free(message) }
        return String(cString: message)
    }
}
