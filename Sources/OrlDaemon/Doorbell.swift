import Dispatch
import Synchronization

/// What the change feed waits on between looks: its signal's ring, or a deadline.
///
/// An `Inbox` with a timeout makes a task group, two child tasks and a sleep for each
/// wait, and the feed waited once per commit (in a chain of steps, about once a
/// millisecond, each wait with a timer of its own). Here a wait is one continuation,
/// and the deadline is one timer source, moved only when the deadline changes: the
/// feed's safety look keeps the same deadline across the commits of five seconds.
final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var cancelled = false
        var waiter: CheckedContinuation<Bool, Never>?
        /// The deadline the timer is set for (nil: not set, or it fired).
        var armed: ContinuousClock.Instant?
    }

    /// A dispatch source is thread-safe (schedule and cancel from any thread).
    private struct Timer: @unchecked Sendable { let source: any DispatchSourceTimer }

    private let state = Mutex(State())
    private let timer: Timer

    init(queue: DispatchQueue) {
        let source = DispatchSource.makeTimerSource(queue: queue)
        timer = Timer(source: source)
        source.setEventHandler { [weak self] in self?.expire() }
        source.activate()
    }

    deinit { timer.source.cancel() }

    /// Wakes the current wait with true, or the next one if none waits.
    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            guard let waiter = state.waiter else {
                state.rung = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume(returning: true)
    }

    /// True when rung (since the last wait returned), false once `deadline` has passed or
    /// the task is cancelled.
    func wait(until deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let (now, arm) = state.withLock { state -> (Bool?, Bool) in
                    if state.rung || state.cancelled {
                        defer { state.rung = false }
                        return (state.rung, false)
                    }
                    if ContinuousClock.now >= deadline { return (false, false) }
                    state.waiter = continuation
                    guard state.armed != deadline else { return (nil, false) }
                    state.armed = deadline
                    return (nil, true)
                }
                if let now { return continuation.resume(returning: now) }
                if arm {
                    let from = DispatchTime.now() + (deadline - ContinuousClock.now).dispatchInterval
                    timer.source.schedule(deadline: from, leeway: .microseconds(200))
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                state.cancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: false)
        }
    }

    /// The timer fired: the wait for its deadline ends (a later deadline re-arms it).
    private func expire() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            // A firing for a deadline since moved later is not this one's (a millisecond's
            // slack: an early look costs nothing).
            guard let armed = state.armed, ContinuousClock.now + .milliseconds(1) >= armed else { return nil }
            state.armed = nil
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: false)
    }
}

/// A signal that can say, after it rang, whether a commit it told of may still be
/// unpublished (`SQLiteFileSignal`: whether anyone holds SQLite's write lock). A signal
/// that cannot say, and `mayTellEarly`, has the feed look again after every ring.
protocol PublicationProbe {
    /// False only when every write told of so far is known to be visible to a reader.
    func mayStillBePublishing() -> Bool
}

/// The change feed's serial executor: a dispatch queue of its own (its store calls
/// block), as `StoreExecutor`, whose queue its signal and its timer also use, so that a
/// commit's news reaches the feed with no hop to another thread.
final class FeedExecutor: SerialExecutor {
    let queue: DispatchQueue

    init(label: String) { queue = DispatchQueue(label: label) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedSerialExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
}

extension Duration {
    /// The same span as a dispatch interval (whole nanoseconds; none when negative).
    fileprivate var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(max(0, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)))
    }
}
