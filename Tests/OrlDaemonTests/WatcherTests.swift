import OrlCore
import OrlDaemon
import ServiceLifecycle
import Synchronization
import Testing

/// `orlctl watch`'s loop, in process: rounds, the wait between them, wakes and a
/// graceful stop, without git or a process.
@Suite struct WatcherTests {
    /// Rounds that record when they start; one may be made to last until the watcher's
    /// graceful shutdown has begun.
    final class Rounds: Sendable {
        private struct State {
            var started = 0
            var finished = 0
            var holdNext = false
        }

        private let state = Mutex(State())
        let events = Inbox<Int>()

        /// The next round stays in progress until the shutdown has begun.
        func holdNext() { state.withLock { $0.holdNext = true } }

        var started: Int { state.withLock { $0.started } }
        var finished: Int { state.withLock { $0.finished } }

        func round() async -> Duration {
            let (number, hold) = state.withLock { state -> (Int, Bool) in
                state.started += 1
                defer { state.holdNext = false }
                return (state.started, state.holdNext)
            }
            events.post(number)
            if hold {
                try? await gracefulShutdown()
                // Still working after the signal: the watcher must wait for this.
                try? await Task.sleep(for: .milliseconds(50))
            }
            state.withLock { $0.finished += 1 }
            return .seconds(3600)
        }

        /// Waits until round `number` has started.
        func waitFor(_ number: Int) async {
            var seen: Set<Int> = []
            let deadline = ContinuousClock.now + .seconds(30)
            while !seen.contains(number), ContinuousClock.now < deadline {
                seen.formUnion(await events.take(waitingAtMost: deadline - ContinuousClock.now))
            }
            #expect(seen.contains(number), "round \(number) did not come")
        }
    }

    @Test func aWakeEndsTheWaitAndARoundFollows() async throws {
        let rounds = Rounds()
        let wakes = Inbox<Watcher.Wake>()
        let watcher = Watcher(wakes: wakes, receiver: nil, signals: []) { await rounds.round() }
        let running = Task { try await watcher.run() }
        await rounds.waitFor(1)
        // The interval is an hour: only the wake can bring the second round.
        wakes.post(.now)
        await rounds.waitFor(2)
        await watcher.stop()
        try await running.value
        #expect(rounds.started == 2)
    }

    @Test func aStopLetsTheRoundInProgressFinishAndStartsNoOther() async throws {
        let rounds = Rounds()
        let wakes = Inbox<Watcher.Wake>()
        let watcher = Watcher(wakes: wakes, receiver: nil, signals: []) { await rounds.round() }
        rounds.holdNext()
        let running = Task { try await watcher.run() }
        await rounds.waitFor(1)
        // A wake that came during the round must not bring another one after the stop.
        wakes.post(.now)
        await watcher.stop()
        try await running.value
        #expect(rounds.finished == 1)
        #expect(rounds.started == 1)
    }
}
