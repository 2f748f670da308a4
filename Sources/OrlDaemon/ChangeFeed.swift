import Glibc
import OrlCore
import OrlStore
import ServiceLifecycle

/// The one place that notices the store changed, and tells the subscribers whose data
/// changed.
///
/// SQLite's `PRAGMA data_version` on a connection of the feed's own changes whenever
/// any other connection commits: another process's (`orlctl apply`, `run`, `secret
/// set`, a `watch` round) and this daemon's other connections alike. The feed reads it
/// when its `ChangeSignal` says the store may have changed (inotify on the database's
/// files: no poll while nothing is written), and once every `safetyInterval` in case
/// news was lost; without a signal it polls every `interval`. It moves with every
/// commit, though, the daemon's own bookkeeping included (statuses, supervision records,
/// the ledger, the alert outbox), so when it does the feed reads the store's per-topic
/// generations (`ChangeTopic`, moved by whichever process writes) and calls
/// only the subscribers of a topic that moved: the controller's own writes never wake
/// it, nor does a ledger flush wake every waiting task poll. Subscribers are called with
/// no lock held and must only post (to an `Inbox`, a waiter list).
///
/// SIGUSR1 (which `apply` and `sync` still send, so that a change is seen at once) is
/// not the feed's business: it wakes the controller directly.
actor ChangeFeed: Service {
    struct Subscriber: Sendable {
        var topics: Set<ChangeTopic>
        /// Also woken for this process's own commits (`OwnCommits`); by default only for
        /// other writers', as whom an own commit concerns was told in memory.
        var ownToo = false
        var notify: @Sendable () -> Void

        init(topics: Set<ChangeTopic>, ownToo: Bool = false, notify: @escaping @Sendable () -> Void) {
            self.topics = topics
            self.ownToo = ownToo
            self.notify = notify
        }
    }

    private let store: any StateUpkeep
    /// Says why the state is gone, when it is (a SQLite state's database file deleted);
    /// nil while it is there.
    private let removed: (@Sendable () -> String?)?
    private let interval: Duration
    private let signal: (any ChangeSignal)?
    private let safetyInterval: Duration
    private let subscribers: [Subscriber]
    /// The commits this process's own writers made (nil: every commit is news to all).
    private let own: OwnCommits?
    private let executor: FeedThread
    private let log: @Sendable (String) -> Void
    private var marker: Int64?
    private var generations: [ChangeTopic: Int64]?
    private var reported = false
    /// Whether its signal watches the store (else it polls every `interval`).
    private(set) var signalled = false

    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    init(
        store: any StateUpkeep, removed: (@Sendable () -> String?)? = nil, interval: Duration, signal: (any ChangeSignal)? = nil,
        safetyInterval: Duration = .seconds(5), subscribers: [Subscriber], own: OwnCommits? = nil,
        log: @escaping @Sendable (String) -> Void, executor: FeedThread = FeedThread()
    ) {
        self.own = own
        self.store = store
        self.removed = removed
        self.interval = interval
        self.signal = signal
        self.safetyInterval = safetyInterval
        self.subscribers = subscribers
        self.log = log
        self.executor = executor
    }

    /// A SQLite state: the feed ends when its database file is removed.
    init(
        store: SQLiteStateStore, interval: Duration, signal: (any ChangeSignal)? = nil, safetyInterval: Duration = .seconds(5),
        subscribers: [Subscriber], own: OwnCommits? = nil, log: @escaping @Sendable (String) -> Void,
        executor: FeedThread = FeedThread()
    ) {
        self.init(
            store: store as any StateUpkeep, removed: Self.removal(of: store.path), interval: interval, signal: signal,
            safetyInterval: safetyInterval, subscribers: subscribers, own: own, log: log, executor: executor)
    }

    /// Whether a SQLite state's database file is gone (its directory deleted).
    static func removal(of path: String) -> @Sendable () -> String? {
        {
            guard access(path, F_OK) != 0, errno == ENOENT else { return nil }
            return "the state database \(path) was removed"
        }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.watch() }
    }

    /// Returns when the task is cancelled or the state is removed: either way the group
    /// shuts down, the agents first.
    func watch() async {
        // The signal listens before the baseline is taken: a commit between the two would
        // otherwise be in neither, and wait for the safety look.
        let bell = Doorbell(thread: executor)
        (signal as? SQLiteFileSignal)?.deliver(on: executor)
        signalled = signal?.start { bell.ring() } ?? false
        defer {
            signal?.stop()
            bell.close()
        }
        start()
        // Subscribers read the store when they were made, before this baseline: a commit
        // in between (a `secret set` right after the controller came up) would never move
        // a topic past the baseline, and its subscriber would keep what it read before. So
        // everyone reads again once, after the baseline.
        for subscriber in subscribers { subscriber.notify() }
        let wait = signalled ? safetyInterval : interval
        // The next look in any case (the safety look, or the poll): it stays put while
        // signals come, so that each signal moves no timer.
        var due = ContinuousClock.now + wait
        // The early re-looks after a signal: the next one, and the pause before it.
        var again: (at: ContinuousClock.Instant, after: Duration)?
        while !Task.isCancelled {
            let rang = await bell.wait(until: again.map { min($0.at, due) } ?? due)
            if Task.isCancelled { return }
            if stateRemoved() { return }
            let now = ContinuousClock.now
            if now >= due { due = now + wait }
            // Asked before the look: if nobody is publishing now, the look sees every
            // commit the signal told of.
            let probe = signal as? any PublicationProbe
            let early = signal?.mayTellEarly == true && (rang ? probe?.mayStillBePublishing() != false : again != nil)
            look()
            if !early {
                again = nil
            } else if rang {
                again = (now + Self.firstLookAfterSignal, Self.firstLookAfterSignal)
            } else if let last = again, now >= last.at {
                again = last.after < Self.lastLookAfterSignal ? (now + last.after * 2, last.after * 2) : nil
            }
        }
    }

    /// A signal can come before the commit it tells of is visible (`mayTellEarly`): a SQLite writer
    /// appends the commit's frames to the `-wal` file (the writes inotify reports) and only
    /// then publishes them in the WAL index, in shared memory, which no file event tells
    /// of. A look in between finds nothing new, and no event follows: the commit would
    /// wait for the safety look, and a task poll for its own recheck (a run started by
    /// `orlctl run` reached its first agent a second late). So after a signal the feed
    /// looks again 1, 2, 4, … 128 ms later (a new signal starts over), unless the signal
    /// says nobody is publishing (`PublicationProbe`: no connection holds SQLite's
    /// write lock, so the look after the signal saw everything); a look is one
    /// `data_version` read while nothing moved. Only a writer stalled longer than that
    /// between its last write and its publication is left to the safety look.
    static let firstLookAfterSignal = Duration.milliseconds(1)
    static let lastLookAfterSignal = Duration.milliseconds(128)

    /// Whether the state's database file is gone (its directory deleted). A controller
    /// left running on it would keep its agents up with nothing left to reach or stop
    /// them by, so the feed ends and the daemon stops, as on SIGTERM.
    func stateRemoved() -> Bool {
        guard let gone = removed?() else { return false }
        log(gone + ": the controller stops its agents and exits")
        return true
    }

    /// Where the store is now: what the next `look` compares with.
    func start() {
        marker = read { () throws(StoreError) in try store.changeMarker() }
        generations = read { () throws(StoreError) in try store.changeGenerations() }
    }

    /// One look: calls the subscribers of each topic written since the last one (those
    /// not woken for this process's own commits, only when another writer's is among
    /// them), and returns those topics. An unreadable marker or generations (the store locked in an
    /// odd way) count as a change of every topic: subscribers read again rather than
    /// miss one.
    @discardableResult
    func look() -> Set<ChangeTopic> {
        let current = read { () throws(StoreError) in try store.changeMarker() }
        guard current == nil || current != marker else { return [] }
        marker = current
        let now = read { () throws(StoreError) in try store.changeGenerations() }
        let changed =
            if let now, let before = generations {
                Set(ChangeTopic.allCases.filter { now[$0] != before[$0] })
            } else {
                Set(ChangeTopic.allCases)
            }
        // The topics some other writer moved: all of them unless every move was this
        // process's own.
        var byOthers = changed
        if let own, let now, let before = generations {
            for topic in changed {
                if let from = before[topic], let to = now[topic], own.explain(topic, from: from, to: to) { byOthers.remove(topic) }
            }
        }
        if let now { generations = now }
        for subscriber in subscribers where !subscriber.topics.isDisjoint(with: subscriber.ownToo ? changed : byOthers) {
            subscriber.notify()
        }
        return changed
    }

    private func read<T>(_ body: () throws(StoreError) -> T) -> T? {
        do {
            let value = try body()
            reported = false
            return value
        } catch {
            if !reported { log("watching the state for changes: \(error.description)") }
            reported = true
            return nil
        }
    }
}
