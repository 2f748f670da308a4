import Dispatch
import Glibc
import OrlCore
import Synchronization

/// `orlctl logs -f`: prints what is appended to a log as it is written, told by inotify
/// (nothing is looked at while nothing is written), across rotations as `tail -F`: a log
/// truncated in place (the controller's rotation copies it away, then truncates it) is
/// read again from its start, and one renamed away and made anew is read to its end and
/// then left for the new file of that name.
final class LogFollower: Sendable {
    let path: String
    private let inotify: Int32
    private let directoryWatch: Int32
    private struct Current {
        /// The file followed (-1: none yet) and its watch.
        var fd: Int32 = -1
        var watch: Int32 = -1
        var inode: UInt64 = 0
    }
    private let current = Mutex(Current())
    private let changes: Inbox<Bool>
    /// Reads inotify's events as they come (in a Mutex: Dispatch's sources are not Sendable).
    private let source: Mutex<(any DispatchSourceRead)?>

    init(path: String) {
        self.path = path
        let inotify = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        self.inotify = inotify
        let slash = path.lastIndex(of: "/") ?? path.startIndex
        let directory = slash == path.startIndex ? "/" : String(path[..<slash])
        // The directory: a new file of the name (IN_CREATE, IN_MOVED_TO). Not IN_MODIFY:
        // the other agents' logs beside it would wake it at each of their writes.
        directoryWatch = inotify < 0 ? -1 : inotify_add_watch(inotify, directory, UInt32(IN_CREATE) | UInt32(IN_MOVED_TO))
        let changes = Inbox<Bool>()
        self.changes = changes
        if inotify >= 0 {
            let source = DispatchSource.makeReadSource(fileDescriptor: inotify, queue: DispatchQueue(label: "orl.logs-follow"))
            source.setEventHandler {
                // Which event it was matters not: each is a reason to look at the file again.
                var buffer = [UInt8](repeating: 0, count: 4096)
                while buffer.withUnsafeMutableBytes({ read(inotify, $0.baseAddress, $0.count) }) > 0 {}
                changes.post(true)
            }
            source.setCancelHandler { Glibc.close(inotify) }
            source.resume()
            self.source = Mutex(source)
        } else {
            source = Mutex(nil)
        }
        current.withLock { $0 = open(path) ?? Current() }
    }

    func close() {
        source.withLock { $0?.cancel() }
        current.withLock { current in
            if current.fd >= 0 { Glibc.close(current.fd) }
            current.fd = -1
        }
        // The source's cancel handler closes inotify's descriptor.
    }

    /// The file at `path` now, opened and watched (its writes, and its leaving the name).
    private func open(_ path: String) -> Current? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            Glibc.close(fd)
            return nil
        }
        let mask = UInt32(IN_MODIFY) | UInt32(IN_MOVE_SELF) | UInt32(IN_DELETE_SELF) | UInt32(IN_ATTRIB)
        let watch = inotify < 0 ? -1 : inotify_add_watch(inotify, path, mask)
        return Current(fd: fd, watch: watch, inode: UInt64(info.st_ino))
    }

    /// Prints what is written from `offset` on, until cancelled (or interrupted).
    func follow(from start: Int64, write: (String) -> Void) async throws {
        guard inotify >= 0, directoryWatch >= 0 else {
            throw CommandFailure(message: "cannot watch \(path) (inotify): \(String(cString: strerror(errno)))")
        }
        var offset = start
        while true {
            offset = catchUp(from: offset, write: write)
            _ = await changes.take()
            try Task.checkCancellation()
        }
    }

    /// Prints what the followed file has past `offset`; moves to the file now at `path`
    /// once the followed one is no longer it. Returns the offset reached.
    private func catchUp(from start: Int64, write: (String) -> Void) -> Int64 {
        var offset = start
        while true {
            let (fd, inode) = current.withLock { ($0.fd, $0.inode) }
            if fd >= 0 { offset = drain(fd, from: offset, write: write) }
            var named = stat()
            guard stat(path, &named) == 0, UInt64(named.st_ino) != inode || fd < 0 else { return offset }
            // Another file has the name now (the followed one was renamed away and its
            // last lines are printed): followed from its start.
            guard let next = open(path) else { return offset }
            current.withLock { current in
                if current.fd >= 0 { Glibc.close(current.fd) }
                if current.watch >= 0 && current.watch != next.watch { _ = inotify_rm_watch(inotify, current.watch) }
                current = next
            }
            offset = 0
        }
    }

    private func drain(_ fd: Int32, from start: Int64, write: (String) -> Void) -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return start }
        // Shorter than what was read: truncated by a rotation; read again from its start.
        var offset = Int64(info.st_size) < start ? 0 : start
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return offset }
            offset += Int64(count)
            write(String(decoding: buffer[..<count], as: UTF8.self))
        }
    }
}
