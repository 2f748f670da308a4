import Dispatch
import Glibc
public import OrlCore
import OrlStore
import Synchronization

/// A commit to a SQLite database in WAL mode is a write to its `-wal` file (and a
/// checkpoint one to the database file), whichever process makes it, so inotify on the
/// state directory tells of every commit without a poll. Only the database's own files
/// count (not the lock or token files; agents' logs are in a directory of their own).
/// The database's removal counts too: the feed then finds the state gone and ends.
public final class SQLiteFileSignal: ChangeSignal, PublicationProbe {
    private let directory: String
    private let name: [UInt8]
    /// What reads the inotify descriptor: a dispatch source (thread-safe: cancel and
    /// resume from any thread), or the feed's own thread.
    private enum Source: @unchecked Sendable {
        case dispatch(any DispatchSourceRead)
        case thread(FeedThread, Int32)
    }
    private let source = Mutex<Source?>(nil)
    /// The feed's thread, which reads the events itself (nil: a dispatch source does).
    private let thread = Mutex<FeedThread?>(nil)
    private static let queue = DispatchQueue(label: "orl.change-signal")
    private let sharedMemoryPath: String
    /// How long the feed's thread leaves the files unwatched after news that came with
    /// commits of this process (`ownCommitsQuiet`).
    private let quiet: Duration
    private let databasePath: String

    /// `databasePath`: the database file (`<state>/state.db`). `ownCommitsQuiet`: after
    /// news that came while this process committed, the feed's thread reads the next
    /// events only that much later, all at once.
    ///
    /// Each commit is a dozen `-wal` writes, each an inotify event: a controller serving
    /// a chain of steps (a commit every half millisecond, its own) had its feed's thread
    /// woken, and its feed looking (a `data_version` read and a read of the topics), at
    /// every one, a fifth to a quarter of the controller's CPU, for news about commits
    /// whose subscribers it had told in memory already (`OwnCommits`). inotify cannot say
    /// whose write an event is; the process's own commit count (a WAL hook on each of its
    /// connections) says whether it wrote since the last news. While it writes, another
    /// process's commit is seen up to `ownCommitsQuiet` later; while it does not, at once.
    public init(databasePath: String, ownCommitsQuiet: Duration = .milliseconds(5)) {
        quiet = ownCommitsQuiet
        self.databasePath = databasePath
        let slash = databasePath.lastIndex(of: "/")
        directory = slash.map { String(databasePath[..<$0]) } ?? "."
        name = Array((slash.map { String(databasePath[databasePath.index(after: $0)...]) } ?? databasePath).utf8)
        sharedMemoryPath = databasePath + "-shm"
    }

    /// From the next `start`, the feed's thread reads the events and calls `notify`: a
    /// commit's news wakes no other thread.
    func deliver(on thread: FeedThread) { self.thread.withLock { $0 = thread } }

    /// The `-wal` writes come before the commit is published in the WAL index.
    public var mayTellEarly: Bool { true }

    /// Whether any connection, of any process (this one's too), holds the database's WAL
    /// write lock. A writer appends its frames and publishes them in the WAL index while
    /// it holds that lock, so when nobody holds it every write reported so far belongs to a
    /// published commit (or to none), and one look sees them all: the feed then needs no
    /// early re-looks. In a chain of steps this process writes one after another, that is
    /// nearly every signal, and each re-look was a timer and a wake of the feed.
    ///
    /// The lock is a POSIX lock on byte 120 of the `-shm` file (SQLite's WAL-index
    /// format, walformat.html, "the WAL-index locks"); an open file description lock's
    /// query (`F_OFD_GETLK`) reports it even when a connection of this process holds it.
    /// Anything unexpected (no `-shm` yet, the query refused) counts as a writer. The
    /// `-shm` file stays the same while the feed's own connection is open (SQLite deletes
    /// it only with the last connection), so the descriptor kept here keeps meaning it.
    func mayStillBePublishing() -> Bool {
        guard let fd = Self.sharedMemory(sharedMemoryPath) else { return true }
        var probe = flock()
        probe.l_type = Int16(F_RDLCK)
        probe.l_whence = Int16(SEEK_SET)
        probe.l_start = Self.writeLockOffset
        probe.l_len = 1
        guard fcntl(fd, Self.ofdGetLock, &probe) == 0 else { return true }
        return probe.l_type != Int16(F_UNLCK)
    }

    /// The WAL write lock's byte in the `-shm` file (`WALINDEX_LOCK_OFFSET`).
    static let writeLockOffset: off_t = 120
    /// `F_OFD_GETLK` (Linux 3.15).
    private static let ofdGetLock: Int32 = 36

    /// A descriptor of each database's `-shm` file, opened once and never closed: closing
    /// any descriptor of a file drops every POSIX lock this process holds on it, SQLite's
    /// own locks on the `-shm` included.
    private static let sharedMemories = Mutex<[String: Int32]>([:])

    private static func sharedMemory(_ path: String) -> Int32? {
        sharedMemories.withLock { open in
            if let fd = open[path] { return fd }
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            open[path] = fd
            return fd
        }
    }

    public func start(notify: @escaping @Sendable () -> Void) -> Bool {
        let fd = inotify_init1(Int32(O_NONBLOCK | O_CLOEXEC))
        guard fd >= 0 else { return false }
        let mask =
            UInt32(IN_MODIFY) | UInt32(IN_CLOSE_WRITE) | UInt32(IN_CREATE) | UInt32(IN_DELETE) | UInt32(IN_MOVED_TO)
            | UInt32(IN_MOVED_FROM) | UInt32(IN_DELETE_SELF)
        guard inotify_add_watch(fd, directory, mask) >= 0 else {
            close(fd)
            return false
        }
        let name = self.name
        let buffer = EventBuffer()
        let new: Source
        if let thread = thread.withLock({ $0 }) {
            new = .thread(thread, fd)
        } else {
            let reader = DispatchSource.makeReadSource(fileDescriptor: fd, queue: Self.queue)
            reader.setEventHandler {
                if Self.drain(fd, into: buffer, mentioning: name) { notify() }
            }
            reader.setCancelHandler { close(fd) }
            new = .dispatch(reader)
        }
        let previous = source.withLock { source in
            defer { source = new }
            return source
        }
        if let previous { Self.end(previous) }
        switch new {
        case .dispatch(let reader): reader.resume()
        case .thread(let thread, _):
            let quiet = self.quiet
            let path = databasePath
            let commits = CommitCount(SQLiteStateStore.commitsInThisProcess(toDatabaseAt: path))
            thread.watch(fd) {
                guard Self.drain(fd, into: buffer, mentioning: name) else { return }
                let now = SQLiteStateStore.commitsInThisProcess(toDatabaseAt: path)
                if now != commits.seen {
                    commits.seen = now
                    thread.mute(until: .now + quiet)
                }
                notify()
            }
        }
        return true
    }

    public func stop() {
        let current = source.withLock { source in
            defer { source = nil }
            return source
        }
        if let current { Self.end(current) }
    }

    private static func end(_ source: Source) {
        switch source {
        case .dispatch(let reader): reader.cancel()
        case .thread(let thread, let fd): thread.unwatch(fd)
        }
    }

    /// This process's commit count at the last news; read and written on the feed's
    /// thread alone.
    private final class CommitCount: @unchecked Sendable {
        var seen: UInt64
        init(_ seen: UInt64) { self.seen = seen }
    }

    /// Where a signal's events are read into: one buffer for its life (a commit's events
    /// are a few dozen bytes; the buffer was made and zeroed for every read).
    private final class EventBuffer: @unchecked Sendable {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 8)
        deinit { bytes.deallocate() }
    }

    /// Reads the events queued; true when one concerns the database's files (or the
    /// directory itself went away). It stops at a read that did not fill half the buffer:
    /// what came after that wakes the reader again.
    private static func drain(_ fd: Int32, into buffer: EventBuffer, mentioning name: [UInt8]) -> Bool {
        var relevant = false
        let bytes = buffer.bytes
        while true {
            let count = read(fd, bytes.baseAddress, bytes.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return relevant }
            var offset = 0
            // struct inotify_event: wd, mask, cookie, len (4 bytes each), then name.
            while offset + 16 <= count {
                let mask = bytes.load(fromByteOffset: offset + 4, as: UInt32.self)
                let length = Int(bytes.load(fromByteOffset: offset + 12, as: UInt32.self))
                let start = offset + 16
                let eventName = bytes[start..<min(start + length, count)].prefix { $0 != 0 }
                if mask & (UInt32(IN_DELETE_SELF) | UInt32(IN_IGNORED) | UInt32(IN_Q_OVERFLOW)) != 0
                    || eventName.starts(with: name)
                {
                    relevant = true
                }
                offset = start + length
            }
            if count < bytes.count / 2 { return relevant }
        }
    }
}
