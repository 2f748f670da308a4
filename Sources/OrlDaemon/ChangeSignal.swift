import Dispatch
import Glibc
public import OrlCore
import Synchronization

/// A commit to a SQLite database in WAL mode is a write to its `-wal` file (and a
/// checkpoint one to the database file), whichever process makes it, so inotify on the
/// state directory tells of every commit without a poll. Only the database's own files
/// count (not the lock or token files; agents' logs are in a directory of their own).
/// The database's removal counts too: the feed then finds the state gone and ends.
public final class SQLiteFileSignal: ChangeSignal {
    private let directory: String
    private let name: [UInt8]
    /// A dispatch source is thread-safe (cancel and resume from any thread).
    private struct Source: @unchecked Sendable { let reader: any DispatchSourceRead }
    private let source = Mutex<Source?>(nil)
    private static let queue = DispatchQueue(label: "orl.change-signal")

    /// `databasePath`: the database file (`<state>/state.db`).
    public init(databasePath: String) {
        let slash = databasePath.lastIndex(of: "/")
        directory = slash.map { String(databasePath[..<$0]) } ?? "."
        name = Array((slash.map { String(databasePath[databasePath.index(after: $0)...]) } ?? databasePath).utf8)
    }

    /// The `-wal` writes come before the commit is published in the WAL index.
    public var mayTellEarly: Bool { true }

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
        let reader = DispatchSource.makeReadSource(fileDescriptor: fd, queue: Self.queue)
        reader.setEventHandler {
            if Self.drain(fd, mentioning: name) { notify() }
        }
        reader.setCancelHandler { close(fd) }
        let previous = source.withLock { source in
            defer { source = Source(reader: reader) }
            return source
        }
        previous?.reader.cancel()
        reader.resume()
        return true
    }

    public func stop() {
        let current = source.withLock { source in
            defer { source = nil }
            return source
        }
        current?.reader.cancel()
    }

    /// Reads every event queued; true when one concerns the database's files (or the
    /// directory itself went away).
    private static func drain(_ fd: Int32, mentioning name: [UInt8]) -> Bool {
        var relevant = false
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return relevant }
            buffer.withUnsafeBytes { bytes in
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
            }
        }
    }
}
