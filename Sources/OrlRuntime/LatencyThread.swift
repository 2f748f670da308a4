import COrlSpawn

/// A thread whose work is a short answer to an event (an event loop serving model calls
/// and agents' tasks) beside threads that compute for seconds (an `apply` in another
/// process, the reconcile of what it changed, a build).
///
/// Linux's EEVDF scheduler gives every thread a slice (1.4 ms here) and lets a thread that
/// wakes take a busy core only when its own slice is shorter than the running thread's
/// (Linux 6.12). With the default, a loop woken by a request waits for the busy thread's
/// slice to run out, at each of a call's hops. A higher nice for the busy threads changes
/// their share, not that wait (an `apply` at nice 19 delayed the gateway's calls no less).
/// A short slice does: a probe pinned beside two busy threads on one core (a
/// 0.5 ms sleep then 0.1 ms of work, 3,000 times, machine loaded) woke with p99 delays of
/// 14–21 ms at the default and 7.4–12.5 ms at 0.1 ms. It costs nothing on an idle core,
/// and the thread's share of a busy one stays the same.
public enum LatencyThread {
    /// The slice the kernel allows at the least: 0.1 ms, about a gateway call's work.
    public static let slice: UInt64 = 100_000

    /// Gives the calling thread the short slice; false when the kernel refused it (the
    /// thread then keeps the default, as before).
    @discardableResult
    public static func markCurrent() -> Bool { orl_set_thread_slice(slice) == 0 }

    /// A thread's slice in nanoseconds as the kernel reports it (its default when none was
    /// asked for; 0 before Linux 6.6; nil when it cannot be read). `thread`: a thread id
    /// (/proc/PID/task), 0 for the calling thread.
    public static func slice(of thread: Int32 = 0) -> UInt64? {
        let slice = orl_thread_slice(thread)
        return slice < 0 ? nil : UInt64(slice)
    }
}
