import NIOCore
import NIOPosix

/// Swift concurrency's jobs on NIO's event loops (the ones the API serves on and the
/// gateway's HTTP client uses) instead of a thread pool of their own: a call then goes
/// on where it was read, instead of hopping between a loop and the pool at every await
/// (two to four thread switches per forwarded call, most of the gateway's added latency).
///
/// For the controller's process only, where everything that blocks (SQLite, waiting for
/// processes, log rotation) runs on executors of its own: a job that blocked would now
/// also hold up the connections of its loop. `ORL_CONCURRENCY_POOL=1` keeps Swift's pool.
public enum EventLoopConcurrency {
    /// Installs the event loops as the global executor, once, before the work starts;
    /// whether it did.
    @discardableResult
    public static func install(environment: [String: String]) -> Bool {
        guard environment["ORL_CONCURRENCY_POOL"] != "1" else { return false }
        return NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }
}
