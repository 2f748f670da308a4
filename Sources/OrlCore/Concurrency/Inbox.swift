import Synchronization

/// Why a loop of the daemon should look at the state again: posted by whoever knows
/// (the change feed, a signal, the gateway), taken by the one loop that owns the inbox.
///
/// Posts merge: however many come in while the loop works, its next `take` returns
/// each distinct reason once and runs one round for all of them, as client-go's work
/// queue merges repeated adds of a key. Posting never blocks and never waits for the
/// loop, so it is safe from a signal handler's queue, a request or another actor.
public final class Inbox<Reason: Hashable & Sendable>: Sendable {
    private struct State {
        var reasons: [Reason] = []
        var waiter: CheckedContinuation<Void, Never>?
        /// Set when the current `take` stopped waiting (its timeout or its task's
        /// cancellation) before its park was registered: that park must not wait.
        var abandoned = false
    }

    private let state = Mutex(State())

    public init() {}

    /// Adds the reason (once: an equal one already waiting is not added again) and
    /// wakes the loop.
    public func post(_ reason: Reason) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if !state.reasons.contains(reason) { state.reasons.append(reason) }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The reasons posted since the last take, in the order first posted; waits for one
    /// for at most `timeout` (nil: until one comes or the task is cancelled). Returns an
    /// empty array on timeout or cancellation. One loop takes from an inbox.
    public func take(waitingAtMost timeout: Duration? = nil) async -> [Reason] {
        if let ready = drain() { return ready }
        if let timeout, timeout <= .zero { return [] }
        state.withLock { $0.abandoned = false }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.park() }
            group.addTask {
                if let timeout { try? await Task.sleep(for: timeout) } else { await Self.sleepUntilCancelled() }
            }
            await group.next()
            group.cancelAll()
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.abandoned = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
        return drain() ?? []
    }

    private func drain() -> [Reason]? {
        state.withLock { state in
            guard !state.reasons.isEmpty else { return nil }
            defer { state.reasons.removeAll() }
            return state.reasons
        }
    }

    private func park() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.abandoned || !state.reasons.isEmpty { return true }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    private static func sleepUntilCancelled() async {
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    }
}
