import COrlSpawn
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The threads a command's bulk work (parsing, encoding, the checks' second half) runs on
/// beside the calling thread, at a lower CPU priority than the caller (nice +10). On an
/// idle machine they take every core as before; on a machine shared with a controller,
/// the scheduler gives the gateway's event loops a core first, so that an `apply` of
/// 10,000 manifests delays the agents' model calls by a scheduling slice rather than by
/// the parsing of a whole chunk. The calling thread keeps its priority, so a command never
/// runs slower than on one core at its own.
///
/// Dispatch's global pool cannot do this: its threads are the Swift cooperative pool's
/// too, and an unprivileged thread can lower its priority but never raise it again.
public final class WorkerPool: Sendable {
    public static let shared = WorkerPool(threads: max(0, processorCount - 1))

    /// The cores this process may run on: its CPU affinity (`taskset`, a container's
    /// cpuset), else the cores online.
    public static let processorCount: Int = {
        let allowed = Int(orl_affinity_cpu_count())
        return allowed > 0 ? allowed : max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }()

    /// A piece of work, let go of before it signals: the caller's closures are borrowed
    /// (`withoutActuallyEscaping`) and must not outlive `run`.
    fileprivate final class Job: @unchecked Sendable {
        // Set at creation, cleared by whichever thread runs it (exactly one: the one that
        // took it off the queue), before `done` is signalled.
        private var body: (@Sendable () -> Void)?
        private let done = DispatchSemaphore(value: 0)

        init(_ body: @escaping @Sendable () -> Void) { self.body = body }

        func run() {
            // Called through the property, so that no reference to the closure is left
            // on this thread's stack when the caller hears it is done.
            body?()
            body = nil
            done.signal()
        }

        func wait() { done.wait() }

        /// Lets the work go without running it (it was taken off the queue, or never queued).
        func drop() { body = nil }
    }

    private let threads: Int
    private let queue = Mutex<(started: Bool, jobs: [Job])>((false, []))
    private let ready = DispatchSemaphore(value: 0)

    /// The nice value of the pool's threads: low enough that a latency-bound thread at 0
    /// wins a shared core (weight 1024 against 110), high enough that they still run
    /// beside ordinary background load.
    public static let niceness: Int32 = 10

    public init(threads: Int) { self.threads = threads }

    /// Runs `here` on the calling thread (it may use what is not `Sendable`) and `others`
    /// on the pool's threads as they are free, and returns when all have run. A body still
    /// queued when `here` is done runs on the caller's thread, so a pool that is busy (or a
    /// call from one of its own threads) never waits for itself.
    public func run(_ here: () -> Void, beside others: [@Sendable () -> Void]) {
        guard !others.isEmpty, threads > 0 else {
            here()
            for body in others { body() }
            return
        }
        let jobs = others.map(Job.init)
        enqueue(jobs)
        HugePages.adviseThisThreadsHeap()
        here()
        for job in jobs { finish(job) }
    }

    /// Starts `body` on a thread of the pool, for a caller that goes on with other work
    /// and asks for the result when it needs it (`Pending.wait`, which runs `body` itself
    /// if no thread of the pool has taken it by then).
    public func start<T: Sendable>(_ body: @escaping @Sendable () -> T) -> Pending<T> {
        let pending = Pending<T>(pool: self)
        pending.job = Job { [pending] in pending.result.withLock { $0 = body() } }
        if threads > 0 { enqueue([pending.job]) }
        return pending
    }

    /// Work started on the pool (`start`), whose result the caller waits for when it needs it.
    public final class Pending<T: Sendable>: @unchecked Sendable {
        fileprivate let pool: WorkerPool
        // Set once by `start`, before the pending value is shared.
        fileprivate var job: Job!
        fileprivate let result = Mutex<T?>(nil)

        fileprivate init(pool: WorkerPool) { self.pool = pool }

        /// Blocks until the work is done, running it here if no thread has taken it
        /// (once: the result is taken).
        public func wait() -> T {
            pool.finish(job)
            return result.withLock { $0.take()! }
        }

        /// The result is not wanted: work no thread has taken is dropped, and work under
        /// way is waited for (what it reads must not outlive what the caller does next).
        public func cancel() {
            pool.finish(job, running: false)
        }
    }

    private func enqueue(_ jobs: [Job]) {
        let start = queue.withLock { state in
            state.jobs.append(contentsOf: jobs)
            defer { state.started = true }
            return !state.started
        }
        // A thread that cannot be had leaves its share to the callers, which run what is
        // still queued themselves.
        if start { for _ in 0..<threads { _ = tryStartThread { [self] in work() } } }
        for _ in jobs { ready.signal() }
    }

    /// Returns once `job` has run: here, if it is still queued (or, when `running` is
    /// false, not at all).
    private func finish(_ job: Job, running: Bool = true) {
        let queued = queue.withLock { state in
            guard let index = state.jobs.firstIndex(where: { $0 === job }) else { return false }
            state.jobs.remove(at: index)
            return true
        }
        if queued || threads == 0 {
            if running { job.run() } else { job.drop() }
        } else {
            job.wait()
        }
    }

    private func work() {
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Self.niceness)
        HugePages.adviseThisThreadsHeap()
        while true {
            ready.wait()
            let job = queue.withLock { $0.jobs.isEmpty ? nil : $0.jobs.removeFirst() }
            job?.run()
        }
    }
}
