import Logging
public import OrlCore
import PostgresNIO
import Synchronization

/// News of commits to a PostgreSQL state from any node: a session of its own listens on
/// `orl_changes`, on which whatever moves a topic's generation (`change_topics`: the
/// statement triggers, and a run writer at its transaction's end) sends a notification,
/// delivered when the writing transaction commits.
///
/// The listening session is not taken from the store's pool (it stays open and idle for
/// the daemon's life). When it is lost (the server restarted, an administrator ended it,
/// the network failed), notifications sent meanwhile are lost with it, so the signal
/// connects again (backing off up to `maxBackoff`) and, once listening again, calls
/// `notify` once: the feed then reads the generations and tells whoever missed a change.
/// A connection that no longer answers (a partition TCP has not noticed) is found by a
/// probe every `probeInterval` and replaced the same way, so the signal never goes deaf
/// silently; the feed's own safety poll covers the time in between.
public final class PostgresChangeSignal: ChangeSignal {
    /// The channel the topics' moves notify (schema migration 3).
    public static let channel = "orl_changes"

    private let pool: PostgresPool
    private let probeInterval: Duration
    private let maxBackoff: Duration
    private let log: @Sendable (String) -> Void
    private let task = Mutex<Task<Void, Never>?>(nil)
    /// The listening session, closed by `stop` (which ends the wait on it).
    private let current = Mutex<PostgresConnection?>(nil)
    private let logger = Logger(label: "orl.postgres.listen")
    /// How many times a listening session was set up (tests watch reconnects by it).
    private let sessions = Atomic<Int>(0)

    init(pool: PostgresPool, probeInterval: Duration, maxBackoff: Duration, log: @escaping @Sendable (String) -> Void) {
        self.pool = pool
        self.probeInterval = probeInterval
        self.maxBackoff = maxBackoff
        self.log = log
    }

    /// Listening sessions set up so far: 1 after the first, one more after each reconnect.
    public var listeningSessions: Int { sessions.load(ordering: .relaxed) }

    public func start(notify: @escaping @Sendable () -> Void) -> Bool {
        let follow = Task { await self.follow(notify) }
        let previous = task.withLock { task in
            defer { task = follow }
            return task
        }
        previous?.cancel()
        return true
    }

    public func stop() {
        let running = task.withLock { task in
            defer { task = nil }
            return task
        }
        running?.cancel()
        if let connection = current.withLock({ $0 }) { PostgresPool.close(connection) }
    }

    private struct Ended: Error {}

    private func follow(_ notify: @escaping @Sendable () -> Void) async {
        var backoff: Duration = .milliseconds(100)
        var failing = false
        while !Task.isCancelled {
            do {
                let connection = try await pool.connectUnpooled().get()
                current.withLock { $0 = connection }
                defer {
                    current.withLock { $0 = nil }
                    PostgresPool.close(connection)
                }
                // Notifications come on the connection's event loop, for as long as it is open.
                connection.addListener(channel: Self.channel) { _, _ in notify() }
                let listen: EventLoopFuture<PostgresQueryResult> = connection.query(
                    PostgresQuery(unsafeSQL: "LISTEN \(Self.channel)"), logger: logger)
                _ = try await listen.get()
                sessions.add(1, ordering: .relaxed)
                if failing { log("listening for changes to the PostgreSQL state \(pool.url) again") }
                failing = false
                backoff = .milliseconds(100)
                // Whatever was committed while no session listened is caught up now.
                notify()
                try await watch(connection)
            } catch {
                if Task.isCancelled { break }
                if !failing {
                    log(
                        "lost the LISTEN session on the PostgreSQL state \(pool.url) "
                            + "(\(error is Ended ? "the connection closed" : PostgresPool.describe(error))); connecting again")
                }
                failing = true
                // Changes may have been missed: the feed reads the generations again.
                notify()
            }
            if Task.isCancelled { break }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, maxBackoff)
        }
    }

    /// Returns (throwing) when the session closes, or does not answer a `SELECT 1` every
    /// `probeInterval` within the pool's query timeout (it is then closed), or when the
    /// signal is stopped. Waits on the connection's own futures: nothing to cancel.
    private func watch(_ connection: PostgresConnection) async throws {
        while true {
            let closed = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let once = Atomic<Bool>(false)
                let timer = connection.eventLoop.scheduleTask(in: .milliseconds(probeInterval.wholeMilliseconds)) {
                    if !once.exchange(true, ordering: .relaxed) { continuation.resume(returning: false) }
                }
                connection.closeFuture.whenComplete { _ in
                    timer.cancel()
                    if !once.exchange(true, ordering: .relaxed) { continuation.resume(returning: true) }
                }
            }
            if Task.isCancelled { throw CancellationError() }
            if closed || connection.isClosed { throw Ended() }
            let answer: EventLoopFuture<PostgresQueryResult> = connection.query(PostgresQuery(unsafeSQL: "SELECT 1"), logger: logger)
            let deadline = connection.eventLoop.scheduleTask(in: .milliseconds(pool.queryTimeout.wholeMilliseconds)) {
                PostgresPool.close(connection)
            }
            defer { deadline.cancel() }
            _ = try await answer.get()
        }
    }
}

extension PostgresStateStore {
    /// The change signal of this state: a LISTEN session of its own.
    public func changeSignal(
        probeInterval: Duration = .seconds(10), maxBackoff: Duration = .seconds(5), log: @escaping @Sendable (String) -> Void
    ) -> PostgresChangeSignal {
        PostgresChangeSignal(pool: pool, probeInterval: probeInterval, maxBackoff: maxBackoff, log: log)
    }
}
