import Glibc
import OrlRuntime
import Synchronization

/// The change feed's executor: a thread of its own that runs the feed's jobs and, between
/// them, waits in one `poll` for the next job, for its signal's file (inotify) and for
/// its deadline (the next look).
///
/// With a dispatch read source and a dispatch timer, each commit woke dispatch's manager
/// thread (its epoll), which re-armed the source and woke a worker for the handler, which
/// then resumed the feed on its queue: in a chain of steps, a commit a millisecond, that
/// was about a sixth of the controller's CPU. Here a commit wakes this thread alone, which
/// reads the event, looks, and sleeps again. Its store calls block it as they blocked the
/// feed's queue, never the cooperative pool.
///
/// The thread exits when it has nothing to run, watch or wait for, and starts again with
/// the next job.
final class FeedThread: SerialExecutor {
    private struct State {
        var jobs: [UnownedJob] = []
        /// The file watched, and what to do when it is readable (on this thread).
        var file: (fd: Int32, ready: @Sendable () -> Void)?
        /// Files no longer watched, closed by the thread (never under a `poll` on them).
        var closing: [Int32] = []
        var deadline: ContinuousClock.Instant?
        var onDeadline: (@Sendable () -> Void)?
        /// Until then the watched file is not polled: what it reports meanwhile waits in
        /// the kernel, and is read at once when the time is up (`mute`).
        var mutedUntil: ContinuousClock.Instant?
        /// Whether the thread exists, and whether it sleeps in `poll`.
        var running = false
        var polling = false
    }

    private let state = Mutex(State())
    /// A pipe written to wake the thread from its `poll`: the read end (polled) and the
    /// write end.
    private let wakeup: (read: Int32, write: Int32)

    init() {
        var ends: [Int32] = [-1, -1]
        if pipe(&ends) == 0 {
            for fd in ends {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        wakeup = (ends[0], ends[1])
    }

    deinit {
        close(wakeup.read)
        close(wakeup.write)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        update { $0.jobs.append(job) }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }

    /// From now on `ready` runs on this thread whenever `fd` is readable (it must read
    /// what is there). The thread closes `fd` once `unwatch` is called.
    func watch(_ fd: Int32, ready: @escaping @Sendable () -> Void) { update { $0.file = (fd, ready) } }

    func unwatch(_ fd: Int32) {
        update { state in
            if state.file?.fd == fd { state.file = nil }
            state.closing.append(fd)
        }
    }

    /// The watched file is not polled until `end`: its news then comes in one read, and
    /// one wake of this thread, instead of one at each event.
    func mute(until end: ContinuousClock.Instant) { update { $0.mutedUntil = end } }

    /// `expire` runs on this thread once `deadline` has passed (nil: no deadline); a new
    /// deadline replaces the last.
    func wake(at deadline: ContinuousClock.Instant?, expire: (@Sendable () -> Void)?) {
        update { state in
            state.deadline = deadline
            state.onDeadline = deadline == nil ? nil : expire
        }
    }

    /// Changes the state, then starts the thread or wakes it from its `poll`.
    private func update(_ change: (inout State) -> Void) {
        let (start, wake) = state.withLock { state -> (Bool, Bool) in
            change(&state)
            if !state.running {
                state.running = true
                return (true, false)
            }
            defer { state.polling = false }
            return (false, state.polling)
        }
        if start {
            startThread { self.loop() }
        } else if wake {
            var one: UInt8 = 1
            _ = write(wakeup.write, &one, 1)
        }
    }

    private func loop() {
        let executor = asUnownedSerialExecutor()
        while true {
            var jobs: [UnownedJob] = []
            var closing: [Int32] = []
            let next = state.withLock { state -> (file: Int32?, deadline: ContinuousClock.Instant?)? in
                swap(&jobs, &state.jobs)
                swap(&closing, &state.closing)
                if let end = state.mutedUntil, ContinuousClock.now >= end { state.mutedUntil = nil }
                if jobs.isEmpty && closing.isEmpty {
                    if state.file == nil && state.deadline == nil {
                        state.running = false
                        return nil
                    }
                    state.polling = true
                }
                // Muted, the file waits and the thread wakes when the mute ends.
                guard let end = state.mutedUntil, state.file != nil else { return (state.file?.fd, state.deadline) }
                return (nil, state.deadline.map { min($0, end) } ?? end)
            }
            for fd in closing { close(fd) }
            guard let next else { return }
            if !jobs.isEmpty || !closing.isEmpty {
                for job in jobs { job.runSynchronously(on: executor) }
                continue
            }
            var fds = [pollfd(fd: wakeup.read, events: Int16(POLLIN), revents: 0)]
            if let file = next.file { fds.append(pollfd(fd: file, events: Int16(POLLIN), revents: 0)) }
            // poll's timeout is in whole milliseconds: rounded up, so that a wake before
            // the deadline (a look early) never spins.
            var timeout: Int32 = -1
            if let deadline = next.deadline {
                let left = max(.zero, deadline - ContinuousClock.now)
                let (seconds, attoseconds) = left.components
                let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
                timeout = Int32(clamping: milliseconds)
            }
            let count = poll(&fds, nfds_t(fds.count), timeout)
            let (ready, expire) = state.withLock { state -> ((@Sendable () -> Void)?, (@Sendable () -> Void)?) in
                state.polling = false
                let ready = count > 0 && fds.count > 1 && fds[1].revents != 0 && state.file?.fd == fds[1].fd ? state.file?.ready : nil
                guard let deadline = state.deadline, ContinuousClock.now >= deadline else { return (ready, nil) }
                state.deadline = nil
                defer { state.onDeadline = nil }
                return (ready, state.onDeadline)
            }
            if count > 0 && fds[0].revents != 0 {
                var drained = [UInt8](repeating: 0, count: 64)
                while read(wakeup.read, &drained, drained.count) > 0 {}
            }
            ready?()
            expire?()
        }
    }
}
