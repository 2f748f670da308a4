import Foundation
import Glibc
import Synchronization

/// What the CLI tests' waits wake on, so that a wait neither holds a thread nor starts a
/// command every few milliseconds: a file changing under a live `TemporaryDirectory`
/// (inotify, every directory under it as it appears: logs, the state's database and its
/// `-wal`, port files, journals), a process a test started ending, or a test saying so
/// (`Changes.signal()`, for state no file shows, such as an HTTP receiver's requests).
///
/// Every change wakes every wait (tests run side by side; a wait re-checks its condition,
/// which is cheap next to what it waits for). What leaves no trace in a watched file (the
/// processes under /proc, a port that starts accepting) is looked at again after `backstop`.
enum Changes {
    /// At most this long between two looks at a condition when nothing is heard.
    static let backstop: Duration = .milliseconds(500)

    private static let watcher = Watcher()

    /// The number of wake-ups so far; `next(after:)` returns once it has moved on.
    static var generation: UInt64 { watcher.state.withLock { $0.generation } }

    /// Watches `directory` and every directory that appears under it, until it is removed.
    static func watch(_ directory: String) { watcher.add(directory) }

    /// Wakes every wait now.
    static func signal() {
        var one: UInt8 = 1
        _ = write(watcher.wake, &one, 1)
    }

    /// Wakes every wait when `process` (not yet running) ends.
    static func signalOnExit(_ process: Process) {
        let previous = process.terminationHandler
        process.terminationHandler = { process in
            previous?(process)
            signal()
        }
    }

    /// Returns at the first wake-up after `generation` (at once if there was one already).
    static func next(after generation: UInt64) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = watcher.state.withLock { state -> Bool in
                guard state.generation == generation else { return true }
                state.waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    private final class Watcher: Sendable {
        struct State {
            var generation: UInt64 = 0
            var waiting: [CheckedContinuation<Void, Never>] = []
            /// Each watch's directory, for the paths of those created under it.
            var directories: [Int32: String] = [:]
        }
        let state = Mutex(State())
        let inotify: Int32
        /// A pipe's ends: `signal()` writes a byte to the second, which wakes the first.
        let wake: Int32
        private let woken: Int32

        private static let mask =
            UInt32(IN_MODIFY) | UInt32(IN_CLOSE_WRITE) | UInt32(IN_CREATE) | UInt32(IN_DELETE) | UInt32(IN_MOVED_TO)
            | UInt32(IN_MOVED_FROM) | UInt32(IN_ATTRIB)

        init() {
            inotify = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            var ends: [Int32] = [0, 0]
            precondition(inotify >= 0 && pipe(&ends) == 0, "inotify or pipe: errno \(errno)")
            for end in ends {
                _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
                _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            }
            woken = ends[0]
            wake = ends[1]
            let thread = Thread { [self] in run() }
            thread.name = "test changes"
            thread.start()
        }

        func add(_ directory: String) {
            let wd = inotify_add_watch(inotify, directory, Self.mask | UInt32(IN_ONLYDIR))
            guard wd >= 0 else { return }
            state.withLock { $0.directories[wd] = directory }
            // What was made under it before the watch began.
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                var isDirectory: ObjCBool = false
                let path = directory + "/" + entry
                if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { add(path) }
            }
        }

        private func run() {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
            let milliseconds = Int32(
                Changes.backstop.components.seconds * 1000 + Changes.backstop.components.attoseconds / 1_000_000_000_000_000)
            while true {
                var fds = [pollfd(fd: inotify, events: Int16(POLLIN), revents: 0), pollfd(fd: woken, events: Int16(POLLIN), revents: 0)]
                _ = poll(&fds, 2, milliseconds)
                var bytes = [UInt8](repeating: 0, count: 64)
                while read(woken, &bytes, bytes.count) > 0 {}
                for directory in drain(buffer) { add(directory) }
                let waiting = state.withLock { state in
                    state.generation &+= 1
                    defer { state.waiting.removeAll() }
                    return state.waiting
                }
                for continuation in waiting { continuation.resume() }
            }
        }

        /// Reads the events queued; returns the directories created (to watch them too).
        private func drain(_ buffer: UnsafeMutableRawBufferPointer) -> [String] {
            var created: [String] = []
            while true {
                let count = read(inotify, buffer.baseAddress, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return created }
                var offset = 0
                // struct inotify_event: wd, mask, cookie, len (4 bytes each), then name.
                while offset + 16 <= count {
                    let wd = buffer.load(fromByteOffset: offset, as: Int32.self)
                    let mask = buffer.load(fromByteOffset: offset + 4, as: UInt32.self)
                    let length = Int(buffer.load(fromByteOffset: offset + 12, as: UInt32.self))
                    let start = offset + 16
                    let name = String(decoding: buffer[start..<min(start + length, count)].prefix { $0 != 0 }, as: UTF8.self)
                    if mask & UInt32(IN_IGNORED) != 0 {
                        _ = state.withLock { $0.directories.removeValue(forKey: wd) }
                    } else if mask & UInt32(IN_ISDIR) != 0, mask & (UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) != 0,
                        let parent = state.withLock({ $0.directories[wd] })
                    {
                        created.append(parent + "/" + name)
                    }
                    offset = start + length
                }
            }
        }
    }
}

/// Waits until `condition` holds, or `seconds` have passed, without holding a thread: the
/// condition is looked at again at each of `Changes`' wake-ups. Says whether it held.
func waitUntil(seconds: Double = 8, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        let generation = Changes.generation
        if try await condition() { return true }
        await Changes.next(after: generation)
    }
    return try await condition()
}
