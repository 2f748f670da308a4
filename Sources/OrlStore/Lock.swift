import Glibc

/// A mutex around a value that is not Sendable, handing it to one thread at a time.
///
/// What `Synchronization.Mutex` does, which would tie the store (and every caller of
/// it) to macOS 15; this works wherever the package builds. The value is only reachable
/// through `withLock`, which is what makes the `@unchecked Sendable` true.
final class Locked<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the mutex. Not recursive: calling it
    /// again from inside `body` deadlocks.
    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    /// Runs `body` with the value if the mutex is free; nil, without waiting, when another
    /// thread (or this one, further up) holds it.
    func withLockIfFree<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R? {
        guard pthread_mutex_trylock(mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
