import Dispatch
import Glibc
import OrlManifests
import OrlRuntime
import Synchronization
import Testing

/// The threads bulk work runs on beside the caller: at a lower priority than the caller,
/// which keeps its own, and never waiting for themselves.
@Suite struct WorkerPoolTests {
    private static func nice() -> Int32 { getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }

    @Test func theOtherBodiesRunAtALowerPriorityThanTheCaller() {
        let pool = WorkerPool(threads: 1)
        let callerBefore = Self.nice()
        let started = DispatchSemaphore(value: 0)
        let seen = Mutex<(caller: Int32?, worker: Int32?, sameThread: Bool)>((nil, nil, true))
        let caller = pthread_self()
        pool.run(
            {
                // Held until the pool's thread has taken the other body, so that it is
                // not run here once this one ends.
                let taken = started.wait(timeout: .now() + 60) == .success
                seen.withLock { $0.caller = taken ? Self.nice() : nil }
            },
            beside: [
                {
                    seen.withLock {
                        $0.worker = Self.nice()
                        $0.sameThread = pthread_equal(pthread_self(), caller) != 0
                    }
                    started.signal()
                }
            ])
        let result = seen.withLock { $0 }
        #expect(result.caller == callerBefore)
        #expect(result.sameThread == false)
        #expect(result.worker == max(callerBefore, WorkerPool.niceness))
        #expect(Self.nice() == callerBefore)
    }

    @Test func aBusyPoolRunsWhatIsQueuedOnTheCallersThread() {
        let pool = WorkerPool(threads: 1)
        let ran = Mutex<[String]>([])
        let release = DispatchSemaphore(value: 0)
        let inner = DispatchSemaphore(value: 0)
        pool.run(
            {
                // The pool's one thread is busy with the body below, which itself calls
                // the pool: its second body can only run on that thread, as a caller.
                _ = inner.wait(timeout: .now() + 60)
                ran.withLock { $0.append("outer first") }
                release.signal()
            },
            beside: [
                {
                    pool.run(
                        { ran.withLock { $0.append("inner first") } },
                        beside: [{ ran.withLock { $0.append("inner second") } }])
                    inner.signal()
                    _ = release.wait(timeout: .now() + 60)
                }
            ])
        #expect(ran.withLock { $0 }.sorted() == ["inner first", "inner second", "outer first"])
    }

    @Test func startedWorkIsWaitedForOrRunByTheCaller() {
        let caller = pthread_self()
        // No thread: the caller runs it when it asks for the result.
        let alone = WorkerPool(threads: 0).start { pthread_equal(pthread_self(), caller) != 0 }
        #expect(alone.wait())
        // A thread: it takes the work while the caller goes on.
        let pool = WorkerPool(threads: 1)
        let taken = DispatchSemaphore(value: 0)
        let started = pool.start { () -> Bool in
            taken.signal()
            return pthread_equal(pthread_self(), caller) != 0
        }
        #expect(taken.wait(timeout: .now() + 60) == .success)
        #expect(started.wait() == false)
    }

    @Test func cancelledWorkNoThreadTookIsNotRun() {
        let ran = Atomic<Int>(0)
        WorkerPool(threads: 0).start { ran.add(1, ordering: .relaxed) }.cancel()
        #expect(ran.load(ordering: .relaxed) == 0)
    }

    @Test func parallelMapKeepsTheIndexOrder() {
        let squares = ManifestParsing.parallelMap(1_000, minimumPerWorker: 1) { $0 * $0 }
        #expect(squares == (0..<1_000).map { $0 * $0 })
    }

    /// A thread held at one index (the pool's, behind the machine's other work) leaves
    /// every other index to the threads that are free, rather than a fixed share of them.
    @Test(.enabled(if: WorkerPool.processorCount > 1)) func parallelMapLeavesAHeldThreadsShareToTheOthers() {
        let count = 200
        let others = DispatchSemaphore(value: 0)
        let done = Atomic<Int>(0)
        let results = ManifestParsing.parallelMap(count, minimumPerWorker: 1) { index -> Bool in
            if index == 0 {
                // Whichever thread took index 0 waits here until every other index has run.
                return others.wait(timeout: .now() + 60) == .success
            }
            if done.add(1, ordering: .relaxed).newValue == count - 1 { others.signal() }
            return true
        }
        #expect(results.allSatisfy { $0 })
        #expect(done.load(ordering: .relaxed) == count - 1)
    }
}
