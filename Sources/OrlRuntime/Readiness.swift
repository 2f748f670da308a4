import COrlSpawn
import Dispatch
import Glibc
public import OrlCore
import Synchronization

/// How a daemon started in the background tells whoever started it that it is ready,
/// or why it could not be: a pipe it inherits (its number in `variable`). It writes
/// `ready` once and closes it, or writes its error and closes it; a daemon that dies
/// first closes it by dying. So the starter learns the outcome the moment there is one,
/// rather than by looking again and again.
public enum Readiness {
    public static let variable = "ORL_READY_FD"
    static let readyLine = "ready\n"

    /// The starter's side: a close-on-exec pipe, both ends above 0...2 (a starter run
    /// with those closed gets them from pipe(2), and the spawn installs 0...2 itself).
    /// The writing end is for `ProcessRuntime.spawnDetached(inherit:)`, then closed.
    public static func pipe() throws(RuntimeError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard orl_pipe_cloexec(&fds) == 0 else { throw RuntimeError("cannot create a pipe: \(describeErrno(errno))") }
        for index in 0..<2 where fds[index] < 3 {
            let moved = fcntl(fds[index], F_DUPFD_CLOEXEC, 3)
            let error = errno
            close(fds[index])
            fds[index] = moved
            guard moved >= 0 else {
                for fd in fds where fd >= 0 { close(fd) }
                throw RuntimeError("cannot create a pipe: \(describeErrno(error))")
            }
        }
        return (fds[0], fds[1])
    }

    public enum Outcome: Equatable, Sendable {
        case ready
        /// It closed the pipe: with its error, or with nothing (it died first).
        case failed(String)
        case timedOut
    }

    /// Reads `fd` (then closes it) until the daemon closes it or `deadline` passes: on a
    /// thread of Dispatch's, as the read blocks.
    public static func await(_ fd: Int32, until deadline: ContinuousClock.Instant) async -> Outcome {
        await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            DispatchQueue.global().async { continuation.resume(returning: read(fd, until: deadline)) }
        }
    }

    static func read(_ fd: Int32, until deadline: ContinuousClock.Instant) -> Outcome {
        defer { close(fd) }
        var said: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return .timedOut }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(left / .milliseconds(1), Double(Int32.max)).rounded(.up)))
            if ready < 0 && errno != EINTR { return .failed(describeErrno(errno)) }
            guard ready > 0 else { continue }
            let count = Glibc.read(fd, &buffer, buffer.count)
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if count <= 0 { break }
            said += buffer[..<count]
            // Enough: the pipe may stay open in a process the daemon started by mistake.
            if said == Array(readyLine.utf8) { return .ready }
        }
        while let last = said.last, last == 10 || last == 13 || last == 32 { said.removeLast() }
        return .failed(String(decoding: said, as: UTF8.self))
    }

    /// The daemon's side: the descriptor its starter gave it (nil when started otherwise),
    /// made close-on-exec at once, so that nothing it starts keeps the pipe open, and
    /// taken out of the environment.
    public static func inherited() -> Reporter? {
        guard let text = getenv(variable).map({ String(cString: $0) }) else { return nil }
        unsetenv(variable)
        guard let fd = Int32(text), fd >= 3, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else { return nil }
        return Reporter(fd)
    }

    /// Says once, `ready` or why not: whichever comes first is told, the other is not
    /// (the descriptor is closed, and its number may be another's by then).
    public final class Reporter: Sendable {
        private let fd: Mutex<Int32?>
        init(_ fd: Int32) { self.fd = Mutex(fd) }
        public func ready() { take().map { Readiness.report($0) } }
        public func failed(_ error: String) { take().map { Readiness.report($0, error: error) } }
        private func take() -> Int32? {
            fd.withLock { fd in
                defer { fd = nil }
                return fd
            }
        }
    }

    /// Says `ready` (nil) or the error on `fd` and closes it.
    static func report(_ fd: Int32, error: String? = nil) {
        let bytes = Array((error.map { $0.hasSuffix("\n") ? $0 : $0 + "\n" } ?? readyLine).utf8)
        // A starter that gave up waiting has closed its end: EPIPE, not SIGPIPE's death.
        withSIGPIPEBlocked {
            var written = 0
            while written < bytes.count {
                let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                written += count
            }
        }
        close(fd)
    }
}
