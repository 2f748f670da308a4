import Synchronization

/// What the change feed waits on between looks: its signal's ring, or a deadline.
///
/// An `Inbox` with a timeout makes a task group, two child tasks and a sleep for each
/// wait, and the feed waited once per commit (in a chain of steps, about once a
/// millisecond). Here a wait is one continuation, and its deadline is the feed thread's
/// `poll` timeout (`FeedThread`).
final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var cancelled = false
        var waiter: CheckedContinuation<Bool, Never>?
    }

    private let state = Mutex(State())
    private let thread: FeedThread

    init(thread: FeedThread) { self.thread = thread }

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
    /// the task is cancelled. Runs on the caller's executor (the feed's thread), so that
    /// the wait hops to no other thread on the way in.
    func wait(until deadline: ContinuousClock.Instant, isolation: isolated (any Actor)? = #isolation) async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation(isolation: isolation) { (continuation: CheckedContinuation<Bool, Never>) in
                let now = state.withLock { state -> Bool? in
                    if state.rung || state.cancelled {
                        defer { state.rung = false }
                        return state.rung
                    }
                    if ContinuousClock.now >= deadline { return false }
                    state.waiter = continuation
                    return nil
                }
                if let now { return continuation.resume(returning: now) }
                thread.wake(at: deadline) { [weak self] in self?.expire() }
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

    /// No more waits: the thread keeps no deadline for them.
    func close() { thread.wake(at: nil, expire: nil) }

    /// The deadline passed: the wait ends.
    private func expire() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
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
