import OrlCore
import OrlStore
import ServiceLifecycle

/// The one place that notices the store changed, and tells every subscriber.
///
/// SQLite's `PRAGMA data_version` on a connection of the feed's own changes whenever
/// any other connection commits: another process's (`orlctl apply`, `run`, `secret
/// set`, a `watch` round) and this daemon's other connections alike (the agents' API
/// completing a step, the runs driver, the controller). So it is the only poll of the
/// daemon: one cheap pragma every `interval`, on an executor of its own, where there
/// used to be four loops asking the same question. Subscribers are called with no
/// lock held and must only post (to an `Inbox`, a waiter list): they never block it.
///
/// SIGUSR1 (which `apply` and `sync` still send, so that a change is seen without the
/// poll's delay) is not the feed's business: it wakes the controller directly.
actor ChangeFeed: Service {
    private let store: SQLiteStateStore
    private let interval: Duration
    private let subscribers: [@Sendable () -> Void]
    private let executor: StoreExecutor
    private let log: @Sendable (String) -> Void

    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    init(
        store: SQLiteStateStore, interval: Duration, subscribers: [@Sendable () -> Void], log: @escaping @Sendable (String) -> Void,
        executor: StoreExecutor = StoreExecutor(label: "orl.change-feed")
    ) {
        self.store = store
        self.interval = interval
        self.subscribers = subscribers
        self.log = log
        self.executor = executor
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.watch() }
    }

    private func watch() async {
        var marker = read()
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let current = read()
            // An unreadable marker (the store locked in an odd way) counts as a change:
            // subscribers read again rather than miss one.
            if current == nil || current != marker {
                marker = current
                for subscriber in subscribers { subscriber() }
            }
        }
    }

    private var reported = false

    private func read() -> Int64? {
        do {
            let marker = try store.changeMarker()
            reported = false
            return marker
        } catch {
            if !reported { log("watching the state for changes: \(error.description)") }
            reported = true
            return nil
        }
    }
}
