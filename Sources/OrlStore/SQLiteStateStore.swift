public import OrlCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The actual state in a SQLite database, `state.db` in a directory of its own.
///
/// **Processes.** Every `write` is one `BEGIN IMMEDIATE` transaction, so writers in
/// different processes (two `orlctl apply`, or one and the controller) serialize: the
/// second waits, up to the busy timeout, for the first to commit, then sees its result.
/// Reads use WAL snapshots and neither wait for nor block the writer.
///
/// **Threads.** The store holds one connection, used by one thread at a time: `read`
/// and `write` take a mutex for their whole transaction, so calls from several threads
/// queue. Calls block (a `write` up to the busy timeout while another process writes):
/// call from a thread that may block, not from many tasks of the cooperative pool at
/// once. Do not call the store from inside one of its own `read`/`write` bodies: the
/// mutex is not recursive. The reader/writer handed to a body must not outlive it; it
/// throws if used afterwards.
public final class SQLiteStateStore: StateStore {
    /// The database file.
    public let path: String
    private let connection: Locked<Database>

    /// Opens `directory/state.db`, creating the directory (mode 0700: the state names
    /// every agent, tool and credential reference) and the database when missing, and
    /// migrating it to this binary's schema.
    ///
    /// - Parameter busyTimeout: how long a write waits for another process's write
    ///   transaction to end before failing. Applies queue behind each other, so the
    ///   default is generous.
    public init(directory: String, busyTimeout: Duration = .seconds(30)) throws(StoreError) {
        try Self.createDirectory(directory)
        let path = directory.hasSuffix("/") ? directory + "state.db" : directory + "/state.db"
        let database = try Database(path: path)
        try Self.configure(database, busyTimeout: busyTimeout)
        try Schema.migrate(database)
        self.path = path
        self.connection = Locked(database)
    }

    public func read<T>(_ body: (any StateReader) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(.deferred, intent: "read the state", body)
    }

    public func write<T>(_ body: (any StateWriter) throws(StoreError) -> T) throws(StoreError) -> T {
        try transaction(.immediate, intent: "write the state", body)
    }

    /// A number that changes whenever another connection (another orlctl) commits a
    /// write to the database, and only then: SQLite's `PRAGMA data_version`. Cheap (no
    /// file read), so a controller can poll it to notice applies.
    public func changeMarker() throws(StoreError) -> Int64 {
        try connection.withLock { (database: inout Database) throws(StoreError) in
            try database.scalar("PRAGMA data_version", intent: "read the data version") ?? 0
        }
    }

    func transaction<T>(
        _ mode: Database.TransactionMode, intent: String, _ body: (Access) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        try connection.withLock { (database: inout Database) throws(StoreError) in
            let access = Access(database, writable: mode == .immediate)
            defer { access.close() }
            return try database.transaction(mode, intent: intent) { () throws(StoreError) in try body(access) }
        }
    }

    // MARK: Opening

    private static func configure(_ database: Database, busyTimeout: Duration) throws(StoreError) {
        // First, so that even the pragmas below wait for a writer in another process.
        let (seconds, attoseconds) = busyTimeout.components
        let milliseconds = max(0, min(Int64(Int32.max), seconds * 1000 + attoseconds / 1_000_000_000_000_000))
        database.setBusyTimeout(milliseconds: Int32(milliseconds))
        // WAL: readers see a snapshot and do not block the writer, nor it them; the
        // mode is stored in the file, so this is a no-op after the first open.
        // Two processes opening a new database at once can make the switch fail busy
        // at once (SQLite does not always wait in the busy handler for it, to avoid a
        // deadlock), so it is retried for as long as the busy timeout.
        let deadline = ContinuousClock.now + busyTimeout
        var mode = ""
        while true {
            do {
                mode = try database.withStatement("PRAGMA journal_mode = WAL", intent: "switch to WAL mode") {
                    statement throws(StoreError) in
                    try statement.step(intent: "switch to WAL mode") ? statement.text(0) : ""
                }
                break
            } catch {
                guard ContinuousClock.now < deadline else { throw error }
                usleep(10_000)
            }
        }
        guard mode.lowercased() == "wal" else {
            throw StoreError(
                "could not switch the state database \(database.path) to WAL mode (it is in \(mode) mode); "
                    + "is it on a network file system?")
        }
        // NORMAL, not FULL: in WAL mode a commit is then written to the WAL but not
        // synced; the WAL is synced at checkpoints. The database can never be corrupted
        // this way, and a process crash loses nothing; only a power loss or OS crash can
        // lose the last commits before the next checkpoint. An apply is recomputed from
        // the manifests in git, so re-running it is the remedy, and NORMAL saves an
        // fsync per apply (tens of milliseconds on some disks).
        try database.execute("PRAGMA synchronous = NORMAL", intent: "set synchronous mode")
        try database.execute("PRAGMA foreign_keys = ON", intent: "enable foreign keys")
    }

    private static func createDirectory(_ directory: String) throws(StoreError) {
        guard !directory.isEmpty else { throw StoreError("the state directory is an empty path") }
        var isDirectory = stat()
        if stat(directory, &isDirectory) == 0 {
            guard (isDirectory.st_mode & S_IFMT) == S_IFDIR else {
                throw StoreError("the state directory \(directory) exists and is not a directory")
            }
            return
        }
        // Create missing parents first (as mkdir -p), each with mode 0700.
        var prefix = directory.hasPrefix("/") ? "/" : ""
        for component in directory.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                let reason = String(cString: strerror(errno))
                throw StoreError("could not create the state directory \(prefix): \(reason)")
            }
            prefix += "/"
        }
    }
}
