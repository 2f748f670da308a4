import Dispatch

/// A serial executor on a dispatch queue of its own, for actors that call SQLite.
///
/// A store call blocks its thread: up to the busy timeout while another process holds
/// the write lock. On the cooperative pool (as wide as the machine has cores, two here)
/// one such call stalls every task of the process, the gateway's included. An actor
/// whose `unownedExecutor` is one of these runs its code, and so its store calls, on a
/// thread of the queue's own instead (dispatch's overcommit threads, which a blocked
/// one does not starve), as GRDB's `DatabaseQueue` does; it still awaits like any actor.
public final class StoreExecutor: SerialExecutor {
    private let queue: DispatchQueue

    public init(label: String) { queue = DispatchQueue(label: label) }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedSerialExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }

    /// Runs `body` on the queue and waits for it without holding a pool thread: for a
    /// store call made from code that is not an actor on this executor.
    public func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, E>, Never>) in
            queue.async {
                do throws(E) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
