public import OrlCore
import Synchronization

/// Agents' long polls waiting for a task. A write that makes an agent's step Ready
/// (`RunOperations.onReady`, here or in the runs driver) wakes that agent's polls at
/// once; a change another process committed (`orlctl run`, `approve`) wakes them all.
/// Each poll also looks again now and then on its own, for steps whose retry backoff
/// ends, which nothing announces.
///
/// A poll reads `version(of:)` before it looks for a task and waits only if nothing was
/// announced since, so an announcement between its look and its wait is not lost.
public final class TaskWaiters: Sendable {
    private struct Waiter {
        var agent: ResourceID
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var next = 0
        var waiting: [Int: Waiter] = [:]
        /// Waits cancelled before they were registered.
        var cancelled: Set<Int> = []
        var everyone = 0
        var versions: [ResourceID: Int] = [:]
        var longestWait: Duration = .zero
    }

    /// What was announced to an agent so far.
    public struct Version: Sendable, Hashable {
        var everyone: Int
        var agent: Int
    }

    private let state = Mutex(State())

    public init() {}

    /// How many polls are waiting now, each registered to be woken by the next
    /// announcement that concerns it (a test waits for its poll to be among them).
    public var waitingPolls: Int { state.withLock { $0.waiting.count } }

    /// The longest any poll has waited, or was to wait, to be woken: what the waits
    /// agents ask for were clamped to (a test reads it rather than timing the polls).
    public var longestWait: Duration { state.withLock { $0.longestWait } }

    public func version(of agent: ResourceID) -> Version {
        state.withLock { Version(everyone: $0.everyone, agent: $0.versions[agent] ?? 0) }
    }

    /// The agents have a step Ready (or soon).
    public func notify(_ agents: Set<ResourceID>) {
        let woken = state.withLock { state in
            for agent in agents { state.versions[agent, default: 0] += 1 }
            let ids = state.waiting.filter { agents.contains($0.value.agent) }.map(\.key)
            return ids.compactMap { state.waiting.removeValue(forKey: $0) }
        }
        for waiter in woken { waiter.continuation.resume() }
    }

    /// Something changed that may concern any agent.
    public func notifyAll() {
        let woken = state.withLock { state in
            state.everyone += 1
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for waiter in woken { waiter.continuation.resume() }
    }

    /// Returns when the agent is notified after `seen`, after `duration`, or when the
    /// calling task is cancelled (the client went away), whichever comes first.
    public func wait(_ agent: ResourceID, since seen: Version, for duration: Duration) async {
        guard version(of: agent) == seen else { return }
        state.withLock { $0.longestWait = max($0.longestWait, duration) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: duration) }
            group.addTask { await self.suspend(agent, since: seen) }
            await group.next()
            group.cancelAll()
        }
    }

    private func suspend(_ agent: ResourceID, since seen: Version) async {
        let id = state.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.cancelled.remove(id) != nil { return true }
                    if state.everyone != seen.everyone || (state.versions[agent] ?? 0) != seen.agent { return true }
                    state.waiting[id] = Waiter(agent: agent, continuation: continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                if let waiter = state.waiting.removeValue(forKey: id) { return waiter }
                state.cancelled.insert(id)
                return nil
            }
            waiter?.continuation.resume()
        }
        // A cancellation that came after a notification left its mark for nothing.
        state.withLock { _ = $0.cancelled.remove(id) }
    }
}
