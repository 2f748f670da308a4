import Glibc
public import OrlCore
import Synchronization

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
    /// `<directory>/state.db`: the database file of the state in `directory`.
    public static func databasePath(_ directory: String) -> String {
        directory.hasSuffix("/") ? directory + "state.db" : directory + "/state.db"
    }

    public let path: String
    private let connection: Locked<Database>
    /// A write that must not wait left its commit's checkpoint due (`finishWrites`).
    private let checkpointDue = Locked(false)
    /// How long a call waits for another connection's lock (a write that must not wait
    /// sets it aside).
    private let busyTimeout: Duration
    /// Set when this store created the database (see `transaction`): its first write
    /// transaction has not run yet.
    private let createdUnwritten: Atomic<Bool>
    /// The inode of the database this store created (0: it found it).
    private let createdInode: UInt64
    /// Where this connection's run writes record how they moved the `runs` topic (see
    /// `OwnCommits`); nil: nowhere.
    let ownCommits = Locked<OwnCommits?>(nil)

    /// From now on each run write on this connection records in `own` how it moved the
    /// `runs` topic, so that the change feed of this process can tell its own commits
    /// from other processes'.
    public func recordRunCommits(in own: OwnCommits) { ownCommits.withLock { $0 = own } }

    /// Opens `directory/state.db`, creating the directory (mode 0700: the state names
    /// every agent, tool and credential reference) and the database when missing, and
    /// migrating it to this binary's schema.
    ///
    /// - Parameter busyTimeout: how long a write waits for another process's write
    ///   transaction to end before failing. Applies queue behind each other, so the
    ///   default is generous.
    public convenience init(directory: String, busyTimeout: Duration = .seconds(30)) throws(StoreError) {
        try self.init(directory: directory, busyTimeout: busyTimeout, create: true)
    }

    /// Opens the state that exists in `directory`, never creating it: for a process that
    /// found the state earlier and outlives that moment (a controller's later connections,
    /// a node's guard). A state its owner removed meanwhile stays removed; opening it
    /// again would silently start a new, empty one under the old name.
    public convenience init(existing directory: String, busyTimeout: Duration = .seconds(30)) throws(StoreError) {
        try self.init(directory: directory, busyTimeout: busyTimeout, create: false)
    }

    private init(directory: String, busyTimeout: Duration, create: Bool) throws(StoreError) {
        let path = Self.databasePath(directory)
        var created = false
        if create {
            try Self.createDirectory(directory)
            created = try Self.createIfMissing(path, busyTimeout: busyTimeout)
            Self.restrict(path)
        } else {
            try Self.checkExisting(path)
        }
        // Without `create`, SQLite too refuses a file removed since the check.
        let database = try Database(path: path, create: create)
        try Self.configure(database, busyTimeout: busyTimeout)
        try Schema.migrate(database)
        self.path = path
        self.connection = Locked(database)
        self.busyTimeout = busyTimeout
        var info = stat()
        createdInode = created && stat(path, &info) == 0 ? UInt64(info.st_ino) : 0
        createdUnwritten = Atomic(createdInode != 0)
    }

    /// For a process that writes and ends (`sync --once`): its commits are synced as they
    /// are made, and closing the store leaves the WAL in place, unfolded. Closing a
    /// state after a write otherwise checkpoints it: the WAL synced, its pages copied into
    /// the database file, that file synced, the WAL and its index removed, to be made (and
    /// their directory synced) again by the next process; four syncs of the disk for a
    /// write that one sync of the WAL makes as durable. The next connection reads the few
    /// pages left in the WAL back, and a later checkpoint folds them in.
    public func closeWithoutCheckpoint() throws(StoreError) {
        try connection.withLock { (database: inout Database) throws(StoreError) in try database.closeWithoutCheckpoint() }
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

    /// How many writes each topic has seen (see `ChangeTopic`): read when
    /// `changeMarker` moved, to tell which consumers the commits concern.
    public func changeGenerations() throws(StoreError) -> [ChangeTopic: Int64] {
        try connection.withLock { (database: inout Database) throws(StoreError) in
            let intent = "read the change generations"
            return try database.withStatement("SELECT topic, generation FROM change_topics", intent: intent) {
                statement throws(StoreError) in
                var generations: [ChangeTopic: Int64] = [:]
                while try statement.step(intent: intent) {
                    if let topic = ChangeTopic(rawValue: statement.text(0)) { generations[topic] = statement.int64(1) }
                }
                return generations
            }
        }
    }

    func transaction<T>(
        _ mode: Database.TransactionMode, intent: String, _ body: (SQLStateAccess) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        assert(
            !Self.onEventLoop(),
            "a SQLite call (\(intent)) on an event loop thread: it may wait up to the busy timeout, stalling every connection of the loop")
        return try connection.withLock { (database: inout Database) throws(StoreError) in
            // The first write into a database this store created (a first apply, often the
            // whole fleet) goes around the WAL: in WAL mode every page is written twice, to
            // the WAL and again into the file at the checkpoint, and a first apply of
            // 100,000 manifests writes 300 MB. With a rollback journal, a page past the
            // file's size when the transaction began is not journaled (a rollback truncates
            // the file), so each is written once. WAL mode is entered again after it,
            // committed or not. Only while no other connection has the new file open can
            // the mode change; otherwise the write goes through the WAL as any other. (A
            // connection opening the file meanwhile waits, as it switches it to WAL mode.)
            // A database removed (or replaced) since is left as it is: SQLite would refuse
            // to make a journal beside a file no longer there.
            let aroundWAL =
                mode == .immediate && createdUnwritten.exchange(false, ordering: .relaxed) && Self.inode(of: path) == createdInode
                && (try? database.journalMode("DELETE")) == "delete"
            defer { if aroundWAL { try? Self.enterWAL(database, busyTimeout: busyTimeout) } }
            return try Self.transaction(on: database, mode, intent: intent, body)
        }
    }

    private static func transaction<T>(
        on database: Database, _ mode: Database.TransactionMode, intent: String, _ body: (SQLStateAccess) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        let access = SQLStateAccess(database, writable: mode == .immediate)
        defer { access.close() }
        let result = try database.transaction(mode, intent: intent) { () throws(StoreError) in
            let result = try body(access)
            try access.countChanges()
            _ = try access.countRunChanges()
            return result
        }
        access.committed()
        return result
    }

    /// A write transaction that never waits, so that it may run on an event loop: nil,
    /// with nothing written, when it would (another thread holds the connection, or
    /// another connection SQLite's write lock). The checkpoint its commit may be due,
    /// which copies pages into the database file and syncs it, is left to
    /// `finishWrites`. Only a body with no effect but through the writer may be given:
    /// after nil, or after a lock met in its middle (then rolled back), the caller runs
    /// it again where it may wait.
    func transactionIfFree<T>(intent: String, _ body: (SQLStateAccess) throws(StoreError) -> T) throws(StoreError) -> T? {
        let outcome = try connection.withLockIfFree { (database: inout Database) throws(StoreError) -> T? in
            database.setBusyTimeout(milliseconds: 0)
            database.defersCheckpoints = true
            defer {
                database.defersCheckpoints = false
                database.setBusyTimeout(milliseconds: Self.milliseconds(busyTimeout))
                if database.checkpointDue { checkpointDue.withLock { $0 = true } }
            }
            do throws(StoreError) {
                return try Self.transaction(on: database, .immediate, intent: intent, body)
            } catch {
                guard error.isBusy else { throw error }
                return nil
            }
        }
        return outcome ?? nil
    }

    /// How many commits this process's connections have made so far to the database at
    /// `path` (a state's `state.db`, as `path` gives it), in WAL mode: what tells a change
    /// signal that the news it brings may be this process's own.
    public static func commitsInThisProcess(toDatabaseAt path: String) -> UInt64 {
        Database.commitCount(path).value.load(ordering: .relaxed)
    }

    /// Whether a write that did not wait left work for `finishWrites`.
    public var hasUnfinishedWrites: Bool { checkpointDue.withLock { $0 } }

    /// Makes the checkpoint writes that did not wait left due. Blocks (it writes and
    /// syncs the database file, and waits for the connection): not on an event loop.
    public func finishWrites() {
        guard checkpointDue.withLock({ $0 }) else { return }
        connection.withLock { (database: inout Database) in
            checkpointDue.withLock { $0 = false }
            database.checkpointIfDue()
        }
    }

    private static func inode(of path: String) -> UInt64? {
        var info = stat()
        return stat(path, &info) == 0 && info.st_nlink > 0 ? UInt64(info.st_ino) : nil
    }

    /// Whether the next write transaction of this store is the first into a database it
    /// created (and so skips the WAL; see `transaction`).
    var firstWritePending: Bool { createdUnwritten.load(ordering: .relaxed) }

    /// The database's journal mode, as SQLite reports it (lowercase).
    func journalMode() throws(StoreError) -> String {
        try connection.withLock { (database: inout Database) throws(StoreError) in try database.journalMode(nil) }
    }

    /// Whether this thread is one of SwiftNIO's event loops (its threads are named
    /// `NIO-ELT-…`, the singleton group's `NIO-SGLTN-…`): a store call blocks, and there
    /// it would hold up every connection the loop serves (the API runs gateway calls on
    /// their connection's loop). Checked in debug builds, at each transaction.
    static func onEventLoop() -> Bool {
        let file = Glibc.open("/proc/thread-self/comm", O_RDONLY)
        guard file >= 0 else { return false }
        defer { Glibc.close(file) }
        var name = [UInt8](repeating: 0, count: 32)
        let count = Glibc.read(file, &name, name.count)
        guard count > 0 else { return false }
        let thread = String(decoding: name[0..<count], as: UTF8.self)
        return thread.hasPrefix("NIO-ELT-") || thread.hasPrefix("NIO-SGLTN-")
    }

    // MARK: Opening

    private static func milliseconds(_ busyTimeout: Duration) -> Int32 {
        Int32(max(0, min(Int64(Int32.max), busyTimeout.wholeMilliseconds)))
    }

    private static func configure(_ database: Database, busyTimeout: Duration) throws(StoreError) {
        // First, so that even the pragmas below wait for a writer in another process.
        database.setBusyTimeout(milliseconds: milliseconds(busyTimeout))
        // WAL: readers see a snapshot and do not block the writer, nor it them; the
        // mode is stored in the file, so this is a no-op after the first open.
        try enterWAL(database, busyTimeout: busyTimeout)
        // NORMAL, not FULL: in WAL mode a commit is then written to the WAL but not
        // synced; the WAL is synced at checkpoints. The database can never be corrupted
        // this way, and a process crash loses nothing; only a power loss or OS crash can
        // lose the last commits before the next checkpoint. An apply is recomputed from
        // the manifests in git, so re-running it is the remedy, and NORMAL saves an
        // fsync per apply (tens of milliseconds on some disks).
        try database.execute("PRAGMA synchronous = NORMAL", intent: "set synchronous mode")
        try database.execute("PRAGMA foreign_keys = ON", intent: "enable foreign keys")
    }

    /// WAL: readers see a snapshot and do not block the writer, nor it them; the mode is
    /// stored in the file, so this is a no-op after the first open (and after a first
    /// write that went around the WAL, see `transaction`).
    private static func enterWAL(_ database: Database, busyTimeout: Duration) throws(StoreError) {
        // Two processes opening a new database at once can make the switch fail busy
        // at once (SQLite does not always wait in the busy handler for it, to avoid a
        // deadlock), so it is retried for as long as the busy timeout.
        let deadline = ContinuousClock.now + busyTimeout
        var mode = ""
        while true {
            do {
                mode = try database.journalMode("WAL")
                break
            } catch {
                // Only a lock is worth waiting for: a corrupt file or a full disk would
                // be reported after the whole busy timeout, and stays so.
                guard error.isBusy, ContinuousClock.now < deadline else { throw error }
                usleep(10_000)
            }
        }
        guard mode == "wal" else {
            throw StoreError(
                "could not switch the state database \(database.path) to WAL mode (it is in \(mode) mode); "
                    + "is it on a network file system?")
        }
    }

    /// Finds the existing state database: a regular file, not empty (see `createIfMissing`).
    private static func checkExisting(_ path: String) throws(StoreError) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { throw StoreError("the state database \(path) does not exist (the state was removed)") }
            throw StoreError("cannot read the state database \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0 else {
            throw StoreError("the state database \(path) is not a state database (not a regular file, or empty)")
        }
    }

    /// Creates a new state database whole, or finds the existing one sound enough to
    /// open. A new database is made under a temporary name (mode 0600, in WAL mode,
    /// migrated) and linked into place, so `state.db` never exists empty: an empty one
    /// was truncated (a full disk, a bad copy) and is refused, where SQLite would take
    /// it for a new database and the whole state would silently be gone.
    /// True when this call made it (linked its new database into place).
    private static func createIfMissing(_ path: String, busyTimeout: Duration) throws(StoreError) -> Bool {
        var info = stat()
        if stat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFREG else {
                throw StoreError("the state database \(path) is not a regular file")
            }
            guard info.st_size > 0 else {
                throw StoreError(
                    "the state database \(path) is empty (0 bytes): it was truncated, or is not an orl state; restore it from a "
                        + "backup, or move it away to start a new, empty state")
            }
            return false
        }
        guard errno == ENOENT else {
            throw StoreError("cannot read the state database \(path): \(String(cString: strerror(errno)))")
        }
        let temporary = "\(path).new-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError("cannot create the state database \(temporary): \(String(cString: strerror(errno)))")
        }
        close(fd)
        defer {
            unlink(temporary)
            unlink(temporary + "-wal")
            unlink(temporary + "-shm")
        }
        do {
            // Closed at the end of this block: SQLite then folds the WAL into the file.
            let fresh = try Database(path: temporary)
            try configure(fresh, busyTimeout: busyTimeout)
            try Schema.migrate(fresh)
        }
        // Another process may have created it meanwhile: theirs is as good as ours.
        if link(temporary, path) == 0 { return true }
        guard errno != EEXIST else { return false }
        // A file system without hard links: renamed instead, unless one appeared.
        var existing = stat()
        guard stat(path, &existing) != 0 else { return false }
        if rename(temporary, path) == 0 { return true }
        guard errno == EEXIST else {
            throw StoreError("cannot create the state database \(path): \(String(cString: strerror(errno)))")
        }
        return false
    }

    /// Makes the database and its WAL and shared-memory files 0600 when they are not
    /// (a state created before orl made them so, or copied in): the state names every
    /// agent, tool and credential reference. SQLite gives the WAL and SHM files the
    /// database's mode when it creates them.
    private static func restrict(_ path: String) {
        for file in [path, path + "-wal", path + "-shm"] {
            var info = stat()
            guard lstat(file, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_mode & 0o077 != 0 else { continue }
            chmod(file, 0o600)
        }
    }

    /// Why the state directory is exposed to other local users (group or world may
    /// read or enter it), or nil when it is not.
    public static func exposure(of directory: String) -> String? {
        var info = stat()
        guard stat(directory, &info) == 0, info.st_mode & 0o077 != 0 else { return nil }
        let mode = String(info.st_mode & 0o777, radix: 8)
        return "the state directory \(directory) is open to other local users (mode \(mode)); run chmod 700 \(directory)"
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
