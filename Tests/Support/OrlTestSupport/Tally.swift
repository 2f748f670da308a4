import Synchronization

/// A count that only grows, and the tasks waiting for it to reach theirs: what a test
/// waits on (passes, requests, closes), rather than sleeping.
public final class Tally: Sendable {
    private let state = Mutex<(count: Int, waiters: [(atLeast: Int, continuation: CheckedContinuation<Void, Never>)])>((0, []))

    public init() {}

    public var count: Int { state.withLock { $0.count } }

    public func add() {
        let ready = state.withLock { state in
            state.count += 1
            let count = state.count
            defer { state.waiters.removeAll { $0.atLeast <= count } }
            return state.waiters.filter { $0.atLeast <= count }
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    /// Returns once the count is `count` or more.
    public func wait(atLeast count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state in
                if state.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }
}
