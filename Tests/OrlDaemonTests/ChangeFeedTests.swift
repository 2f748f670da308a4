import Foundation
import OrlController
import OrlCore
import OrlJSON
import OrlPostgres
import OrlStore
import OrlTestPostgres
import OrlTestSupport
import Synchronization
import Testing

@testable import OrlDaemon

/// The change feed against a real store: each subscriber is called for the topics it
/// reads, whichever connection wrote them, and never for the daemon's own bookkeeping.
/// Looks are driven by the test, not by the feed's timer.
@Suite struct ChangeFeedTests {
    @Test func wakesOnlyTheSubscribersOfTheTopicsWritten() async throws {
        let state = try TemporaryState()
        let store = try SQLiteStateStore(directory: state.directory)
        let (resources, secrets, runs, events) = (Tally(), Tally(), Tally(), Tally())
        let feed = ChangeFeed(
            store: try SQLiteStateStore(directory: state.directory), interval: .seconds(3600),
            subscribers: [
                .init(topics: [.resources]) { resources.add() }, .init(topics: [.secrets]) { secrets.add() },
                .init(topics: [.runs]) { runs.add() }, .init(topics: [.events]) { events.add() },
            ], log: { _ in })
        await feed.start()
        #expect(await feed.look() == [])

        let now = Timestamp(milliseconds: 1_795_161_600_000)
        // An apply writes resources and its events.
        try apply(fleet(["a"]), to: store, at: now)
        #expect(await feed.look() == [.resources, .events])
        #expect((resources.count, secrets.count, runs.count, events.count) == (1, 0, 0, 1))

        // What the controller writes as it goes: statuses and supervision records. The
        // store moved (data_version), no topic did.
        let agent = ResourceID(kind: "Agent", name: "a")
        try store.write { writer throws(StoreError) in
            try writer.putStatus(ResourceStatus(conditions: [], observedGeneration: 1, updatedAt: now), for: agent)
            try writer.putSupervision(SupervisionRecord(agent: agent))
        }
        #expect(await feed.look() == [])
        #expect((resources.count, secrets.count, runs.count, events.count) == (1, 0, 0, 1))
        // An event is news for the notifier only.
        try store.write { writer throws(StoreError) in
            try writer.append(StoreEvent(time: now, kind: .normal, resource: agent, reason: "Started", message: "test"))
        }
        #expect(await feed.look() == [.events])

        try store.write { writer throws(StoreError) in try writer.putHold(UserHold(agent: agent, at: now, by: "test")) }
        #expect(await feed.look() == [.resources])
        let sealed = SealedSecret(id: SecretID(name: "key"), box: [1, 2, 3], keyCheck: "check", size: 3, updatedAt: now, updatedBy: "test")
        try store.write { writer throws(StoreError) in try writer.putSecret(sealed) }
        #expect(await feed.look() == [.secrets])
        #expect((resources.count, secrets.count, runs.count, events.count) == (2, 1, 0, 2))
    }
}

extension ChangeFeedTests {
    /// A commit after a subscriber first read the store but before the feed took its
    /// baseline (a `secret set` right after the controller came up) moves no topic past
    /// that baseline: the feed has every subscriber read again once it has it.
    @Test(.timeLimit(.minutes(1))) func aCommitBeforeTheFeedsBaselineIsNotMissed() async throws {
        let state = try TemporaryState()
        let store = try SQLiteStateStore(directory: state.directory)
        let secrets = Tally()
        let feed = ChangeFeed(
            store: try SQLiteStateStore(directory: state.directory), interval: .seconds(3600),
            subscribers: [.init(topics: [.secrets]) { secrets.add() }], log: { _ in })
        let now = Timestamp(milliseconds: 1_795_161_600_000)
        let sealed = SealedSecret(id: SecretID(name: "key"), box: [1, 2, 3], keyCheck: "check", size: 3, updatedAt: now, updatedBy: "test")
        try store.write { writer throws(StoreError) in try writer.putSecret(sealed) }

        let watching = Task { await feed.watch() }
        defer { watching.cancel() }
        await secrets.wait(atLeast: 1)
        #expect(await feed.look() == [])
        #expect(secrets.count == 1)
    }
}

/// With the database's files watched, another connection's commit is news at once,
/// with the poll and the safety look an hour away.
@Suite struct ChangeSignalTests {
    @Test(.timeLimit(.minutes(1))) func aCommitElsewhereWakesTheFeedWithoutAPoll() async throws {
        let state = try TemporaryState()
        let store = try SQLiteStateStore(directory: state.directory)
        let resources = Tally()
        let feedStore = try SQLiteStateStore(directory: state.directory)
        let feed = ChangeFeed(
            store: feedStore, interval: .seconds(3600), signal: SQLiteFileSignal(databasePath: feedStore.path),
            safetyInterval: .seconds(3600), subscribers: [.init(topics: [.resources]) { resources.add() }], log: { _ in })
        let watching = Task { await feed.watch() }
        defer { watching.cancel() }
        // Every subscriber is told once when the feed has its baseline, its signal already
        // listening: from then on a commit is news only through the signal.
        await resources.wait(atLeast: 1)
        #expect(await feed.signalled)
        for agents in [["a"], ["a", "b"]] {
            let seen = resources.count
            try apply(fleet(agents), to: store, at: Timestamp(milliseconds: 1_795_161_600_000))
            await resources.wait(atLeast: seen + 1)
        }
        watching.cancel()
        await watching.value
    }

    /// While this process commits, its feed's thread reads the files' news once a quiet:
    /// the third of three commits, each made once the last was told, is told no sooner
    /// than a quiet after the second (whose news found this process's commit count moved).
    @Test(.timeLimit(.minutes(1))) func newsOfThisProcesssCommitsComesOnceAQuiet() async throws {
        let state = try TemporaryState()
        // Opened as an existing state: the first write of the store that made it goes
        // around the WAL, where no commit is counted.
        _ = try SQLiteStateStore(directory: state.directory)
        let store = try SQLiteStateStore(existing: state.directory)
        let quiet = Duration.seconds(1)
        let signal = SQLiteFileSignal(databasePath: store.path, ownCommitsQuiet: quiet)
        signal.deliver(on: FeedThread())
        let told = Tally()
        #expect(signal.start { told.add() })
        defer { signal.stop() }
        let began = ContinuousClock.now
        let counted = SQLiteStateStore.commitsInThisProcess(toDatabaseAt: store.path)
        for i in 0..<3 {
            let seen = told.count
            try putSecret("key\(i)", in: store)
            await told.wait(atLeast: seen + 1)
        }
        #expect(SQLiteStateStore.commitsInThisProcess(toDatabaseAt: store.path) == counted + 3)
        #expect(ContinuousClock.now - began >= quiet)
    }

    /// Without a commit of this process, news comes at once, each time: another writer's
    /// commit waits for no quiet.
    @Test(.timeLimit(.minutes(1))) func newsOfOtherWritersWaitsForNoQuiet() async throws {
        let state = try TemporaryState()
        let store = try SQLiteStateStore(directory: state.directory)
        // An hour: were it kept after the first news, the second would never come.
        let signal = SQLiteFileSignal(databasePath: store.path, ownCommitsQuiet: .seconds(3600))
        signal.deliver(on: FeedThread())
        let told = Tally()
        #expect(signal.start { told.add() })
        defer { signal.stop() }
        // A file of the database's name, written as another process's connection writes
        // the `-wal`: an event, and no commit of this process.
        let other = store.path + "-other"
        for round in 0..<3 {
            let seen = told.count
            #expect(FileManager.default.createFile(atPath: other, contents: Data("\(round)".utf8)))
            await told.wait(atLeast: seen + 1)
        }
    }

    @Test(.timeLimit(.minutes(1))) func theRemovalOfTheStateIsNewsToo() async throws {
        let state = try TemporaryState()
        let feedStore = try SQLiteStateStore(directory: state.directory)
        let baseline = Tally()
        let feed = ChangeFeed(
            store: feedStore, interval: .seconds(3600), signal: SQLiteFileSignal(databasePath: feedStore.path),
            safetyInterval: .seconds(3600), subscribers: [.init(topics: [.resources]) { baseline.add() }], log: { _ in })
        let watching = Task { await feed.watch() }
        // Told once the feed has its baseline, its signal listening.
        await baseline.wait(atLeast: 1)
        #expect(await feed.signalled)
        try FileManager.default.removeItem(atPath: state.directory)
        await withTaskCancellationHandler {
            await watching.value
        } onCancel: {
            watching.cancel()
        }
    }
}

/// The path from a commit to the agents: another connection commits, the feed's signal
/// (inotify on the database's files) tells the feed, the feed tells the controller, and
/// the controller starts the new agent, with every poll, safety look and resync an hour
/// away: only events can bring the start about.
@Suite struct WakePathTests {
    @Test(.timeLimit(.minutes(1))) func aCommitStartsItsAgentWithoutWaitingForAPoll() async throws {
        let state = try TemporaryState()
        let writer = try SQLiteStateStore(directory: state.directory)
        let now = Timestamp(milliseconds: 1_795_161_600_000)
        try apply(fleet(["a"]), to: writer, at: now)

        var configuration = Controller.Configuration(stateDirectory: state.directory)
        configuration.pollInterval = .seconds(3600)
        configuration.resyncInterval = .seconds(3600)
        let events = EventLog()
        let controller = Controller(
            store: try SQLiteStateStore(directory: state.directory), runtime: FakeRuntime(announces: true), configuration: configuration,
            log: { events.record($0) }, clock: { now })
        let feedStore = try SQLiteStateStore(directory: state.directory)
        // The feed tells every subscriber once when it has its baseline, its signal already
        // listening: from then on no commit goes unseen.
        let told = Tally()
        let feed = ChangeFeed(
            store: feedStore, interval: .seconds(3600), signal: SQLiteFileSignal(databasePath: feedStore.path),
            safetyInterval: .seconds(3600),
            subscribers: [
                .init(topics: [.resources, .secrets]) {
                    controller.inbox.post(.storeChanged)
                    told.add()
                }
            ], log: { _ in })
        let reconciling = Task { await controller.run() }
        let watching = Task { await feed.watch() }
        defer {
            watching.cancel()
            reconciling.cancel()
        }
        // The agent applied before is started by the controller's first pass; the feed
        // is listening once it has told the controller to read.
        await events.wait { $0.reason == .started && $0.resource?.name == "a" }
        await told.wait(atLeast: 1)

        try apply(fleet(["a", "b"]), to: writer, at: now)
        await events.wait { $0.reason == .started && $0.resource?.name == "b" }
        #expect(await feed.signalled)
        controller.requestStop()
        await reconciling.value
    }
}

/// A controller whose state is deleted stops: the feed ends, and with it the group.
@Suite struct RemovedStateTests {
    @Test func theFeedEndsWhenTheStateDatabaseIsRemoved() async throws {
        let state = try TemporaryState()
        let messages = Messages()
        let feed = ChangeFeed(
            store: try SQLiteStateStore(directory: state.directory), interval: .milliseconds(1), subscribers: [],
            log: { messages.add($0) })
        #expect(await feed.stateRemoved() == false)
        let watching = Task { await feed.watch() }
        try FileManager.default.removeItem(atPath: state.directory)
        // Returns by itself: the test waits for the task, not for a time.
        await watching.value
        #expect(messages.all.contains { $0.contains("was removed") }, "\(messages.all)")
    }
}

final class Messages: Sendable {
    private let list = Mutex<[String]>([])
    func add(_ message: String) { list.withLock { $0.append(message) } }
    var all: [String] { list.withLock { $0 } }
}

/// A PostgreSQL state's feed: LISTEN on the channel the triggers notify, so a commit on
/// any connection (any node) is news at once; a lost session connects again and reads
/// what it missed.
@Suite(.enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresChangeSignalTests {
    @Test(.timeLimit(.minutes(2))) func aCommitElsewhereWakesTheFeedAndALostSessionReconnects() async throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("signal")
        let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
        let writer = try PostgresStateStore(url: url)
        let feedStore = try PostgresStateStore(url: url)
        let resources = Tally()
        let messages = Messages()
        let signal = feedStore.changeSignal(probeInterval: .seconds(1), log: { messages.add($0) })
        let feed = ChangeFeed(
            store: feedStore, interval: .seconds(3600), signal: signal, safetyInterval: .seconds(3600),
            subscribers: [.init(topics: [.resources]) { resources.add() }], log: { _ in })
        let watching = Task { await feed.watch() }
        defer { watching.cancel() }
        while signal.listeningSessions == 0 { try await Task.sleep(for: .milliseconds(5)) }
        let now = Timestamp(milliseconds: 1_795_161_600_000)
        let before = resources.count
        try apply(fleet(["a"]), to: writer, at: now)
        await resources.wait(atLeast: before + 1)

        // Every session of the database ended (as a server restart or an administrator
        // would): the change made while the signal connects again is not lost.
        try cluster.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND pid <> pg_backend_pid()")
        let seen = resources.count
        try apply(fleet(["a", "b"]), to: writer, at: now)
        await resources.wait(atLeast: seen + 1)
        while signal.listeningSessions < 2 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(messages.all.contains { $0.contains("lost the LISTEN session") }, "\(messages.all)")
        // And the new session hears the next commit.
        let again = resources.count
        try apply(fleet(["a", "b", "c"]), to: writer, at: now)
        await resources.wait(atLeast: again + 1)
        watching.cancel()
        await watching.value
    }

    /// A run write is announced on the channel by its writer, once, at its commit (no
    /// trigger on the run tables any more): each of another node's commits wakes a
    /// subscriber of the runs with no poll.
    @Test(.timeLimit(.minutes(1))) func aRunCommitElsewhereIsAnnouncedOnTheChannel() async throws {
        let url = try PostgresCluster.shared().database("runsignal")
        let writer = try PostgresStateStore(url: url)
        let now = Timestamp(milliseconds: 1_795_161_600_000)
        try apply(
            fleet(["a"])
                + "\n---\napiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n    - {id: s0, agent: a}\n",
            to: writer, at: now)
        let feedStore = try PostgresStateStore(url: url)
        let runs = Tally()
        let signal = feedStore.changeSignal(probeInterval: .seconds(3600), log: { _ in })
        let feed = ChangeFeed(
            store: feedStore, interval: .seconds(3600), signal: signal, safetyInterval: .seconds(3600),
            subscribers: [.init(topics: [.runs]) { runs.add() }], log: { _ in })
        let watching = Task { await feed.watch() }
        defer { watching.cancel() }
        // Everyone is told once after the feed's baseline.
        await runs.wait(atLeast: 1)
        while signal.listeningSessions == 0 { try await Task.sleep(for: .milliseconds(5)) }
        let operations = RunOperations(store: writer)
        _ = try operations.start(.init(workflow: ResourceID(kind: "Workflow", name: "w"), by: "test"), now: now, random: 1)
        await runs.wait(atLeast: 2)
        let task = try #require(try operations.claim(agent: ResourceID(kind: "Agent", name: "a"), now: now))
        await runs.wait(atLeast: 3)
        try operations.complete(
            task.id, agent: ResourceID(kind: "Agent", name: "a"), output: try JSONParser.parse("{}", file: "<test>"), now: now)
        await runs.wait(atLeast: 4)
        watching.cancel()
        await watching.value
    }
}

extension ChangeFeedTests {
    /// The runs this process's API writes wake whom they concern in memory: the feed
    /// wakes the task polls only for another writer's run commits (however they
    /// interleave with its own), and a subscriber that asks for its own too (the runs
    /// driver, for the leases it sweeps) is woken for every one.
    @Test func ownRunCommitsWakeOnlyTheSubscribersThatAskForThem() async throws {
        let state = try TemporaryState()
        let now = Timestamp(milliseconds: 1_795_161_600_000)
        let setup = try SQLiteStateStore(directory: state.directory)
        try apply(
            fleet(["a"])
                + "\n---\napiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n    - {id: s0, agent: a}\n    - {id: s1, agent: a, dependsOn: [s0]}\n",
            to: setup, at: now)
        let own = OwnCommits()
        let mine = try SQLiteStateStore(directory: state.directory)
        mine.recordRunCommits(in: own)
        let other = try SQLiteStateStore(directory: state.directory)
        let (polls, driver) = (Tally(), Tally())
        let feed = ChangeFeed(
            store: try SQLiteStateStore(directory: state.directory), interval: .seconds(3600),
            subscribers: [.init(topics: [.runs]) { polls.add() }, .init(topics: [.runs], ownToo: true) { driver.add() }], own: own,
            log: { _ in })
        await feed.start()
        let workflow = ResourceID(kind: "Workflow", name: "w")
        let agent = ResourceID(kind: "Agent", name: "a")

        // Another process starts a run: news to everyone.
        _ = try RunOperations(store: other).start(.init(workflow: workflow, by: "test"), now: now, random: 1)
        #expect(await feed.look().contains(.runs))
        #expect((polls.count, driver.count) == (1, 1))

        // This process's API claims and completes (two commits): the driver only.
        let operations = RunOperations(store: mine)
        let task = try #require(try operations.claim(agent: agent, now: now))
        try operations.complete(task.id, agent: agent, output: try JSONParser.parse(#"{"ok": true}"#, file: "<test>"), now: now)
        #expect(await feed.look().contains(.runs))
        #expect((polls.count, driver.count) == (1, 2))

        // Its own commit, then another process's: the other's is news.
        let next = try #require(try operations.claim(agent: agent, now: now))
        _ = try RunOperations(store: other).start(.init(workflow: workflow, by: "test"), now: now, random: 2)
        #expect(await feed.look().contains(.runs))
        #expect((polls.count, driver.count) == (2, 3))

        // Another's, then its own: news too.
        _ = try RunOperations(store: other).start(.init(workflow: workflow, by: "test"), now: now, random: 3)
        try operations.complete(next.id, agent: agent, output: try JSONParser.parse(#"{"ok": true}"#, file: "<test>"), now: now)
        #expect(await feed.look().contains(.runs))
        #expect((polls.count, driver.count) == (3, 4))

        // A refused answer commits nothing: no look finds a move.
        #expect(throws: RunError.self) {
            try operations.complete(next.id, agent: agent, output: try JSONParser.parse("{}", file: "<test>"), now: now)
        }
        #expect(await feed.look() == [])
        #expect((polls.count, driver.count) == (3, 4))
    }
}

/// A SQLite writer's `-wal` writes (what inotify reports) come before its commit is
/// published in the WAL index: the feed's look can fall in between, find nothing, and
/// no event follows. Here the commit lands right after the feed read the marker on the
/// signal's news, with the poll and the safety look an hour away: only the feed's own
/// looks after the signal can see it.
@Suite struct EarlySignalTests {
    @Test func aCommitPublishedAfterTheSignalsLookIsNotMissed() async throws {
        let signal = ManualSignal()
        let seen = try await Self.commitAfterTheSignalsLookIsSeen(signal, ring: signal.ring)
        #expect(seen, "the commit published after the signal's look was never seen")
    }

    /// Commits right after the feed's look on `signal`'s news (rung by `ring`), with the
    /// poll and the safety look an hour away; whether the feed told of it.
    static func commitAfterTheSignalsLookIsSeen(_ signal: any ChangeSignal, ring: () -> Void) async throws -> Bool {
        let state = try TemporaryState()
        let writer = try SQLiteStateStore(directory: state.directory)
        let store = CommitAfterRead(try SQLiteStateStore(directory: state.directory))
        let told = Inbox<Bool>()
        let feed = ChangeFeed(
            store: store, interval: .seconds(3600), signal: signal, safetyInterval: .seconds(3600),
            subscribers: [.init(topics: [.secrets]) { told.post(true) }], log: { _ in })
        let watching = Task { await feed.watch() }
        defer { watching.cancel() }
        // Every subscriber is told once when the feed has its baseline.
        _ = await told.take()

        let now = Timestamp(milliseconds: 1_795_161_600_000)
        let sealed = SealedSecret(id: SecretID(name: "key"), box: [1, 2, 3], keyCheck: "check", size: 3, updatedAt: now, updatedBy: "test")
        store.arm { try? writer.write { writer throws(StoreError) in try writer.putSecret(sealed) } }
        ring()
        // Told within a few milliseconds; the bound only ends the test when it is not
        // (the next look would be an hour away).
        let news = await told.take(waitingAtMost: .seconds(30))
        #expect(store.armed == false)
        return !news.isEmpty
    }
}

/// A signal the test rings; like inotify's, it may ring before the commit is visible.
final class ManualSignal: ChangeSignal {
    private let notify = Mutex<(@Sendable () -> Void)?>(nil)
    var mayTellEarly: Bool { true }
    func start(notify: @escaping @Sendable () -> Void) -> Bool {
        self.notify.withLock { $0 = notify }
        return true
    }
    func stop() { notify.withLock { $0 = nil } }
    func ring() { notify.withLock { $0 }?() }
}

/// A store whose next marker read, once armed, is followed by a commit elsewhere: the
/// marker read saw the store before it.
final class CommitAfterRead: StateUpkeep {
    private let store: SQLiteStateStore
    private let pending = Mutex<(@Sendable () -> Void)?>(nil)

    init(_ store: SQLiteStateStore) { self.store = store }

    func arm(_ commit: @escaping @Sendable () -> Void) { pending.withLock { $0 = commit } }
    var armed: Bool { pending.withLock { $0 != nil } }

    func changeMarker() throws(StoreError) -> Int64 {
        let marker = try store.changeMarker()
        pending.withLock { pending in
            defer { pending = nil }
            return pending
        }?()
        return marker
    }
    func changeGenerations() throws(StoreError) -> [ChangeTopic: Int64] { try store.changeGenerations() }
    func retain(_ policy: RetentionPolicy, now: Timestamp) throws(StoreError) -> RetentionReport { try store.retain(policy, now: now) }
    func usage(_ query: LedgerQuery) throws(StoreError) -> (calls: [LedgerEntry], days: [LedgerDay]) { try store.usage(query) }
    func ledgerDaily() throws(StoreError) -> [LedgerDay] { try store.ledgerDaily() }
    func fleetGauges() throws(StoreError) -> FleetGauges { try store.fleetGauges() }
}

/// Whether a signal's news may still be unpublished: SQLite's WAL write lock, held by
/// any connection (this process's own too, which a plain POSIX lock query would not
/// report), means a writer may be between its `-wal` writes and their publication.
@Suite struct PublicationProbeTests {
    @Test func aWriteTransactionOfThisProcessCountsAsPublishing() throws {
        let state = try TemporaryState()
        // Opened as an existing state: the first write of the store that made it goes
        // around the WAL (a first apply), and holds no WAL lock.
        _ = try SQLiteStateStore(directory: state.directory)
        let store = try SQLiteStateStore(existing: state.directory)
        let signal = SQLiteFileSignal(databasePath: store.path)
        _ = try store.changeMarker()
        #expect(signal.mayStillBePublishing() == false)
        let now = Timestamp(milliseconds: 1_795_161_600_000)
        let sealed = SealedSecret(id: SecretID(name: "key"), box: [1, 2, 3], keyCheck: "check", size: 3, updatedAt: now, updatedBy: "test")
        let during = try store.write { writer throws(StoreError) -> Bool in
            try writer.putSecret(sealed)
            return signal.mayStillBePublishing()
        }
        #expect(during == true)
        #expect(signal.mayStillBePublishing() == false)
        // A reader holds no write lock.
        let reading = try store.read { _ throws(StoreError) -> Bool in signal.mayStillBePublishing() }
        #expect(reading == false)
    }

    /// A signal that says a writer may still be publishing gets the early re-looks: the
    /// commit published after the signal's look is seen without a poll.
    @Test func aSignalThatSaysPublishingStillGetsItsReLooks() async throws {
        let signal = ProbedSignal(publishing: true)
        let seen = try await EarlySignalTests.commitAfterTheSignalsLookIsSeen(signal, ring: signal.ring)
        #expect(seen, "the commit published after the signal's look was never seen")
    }
}

/// A signal the test rings, that answers the publication probe as told.
final class ProbedSignal: ChangeSignal, PublicationProbe {
    private let manual = ManualSignal()
    private let publishing: Bool
    init(publishing: Bool) { self.publishing = publishing }
    var mayTellEarly: Bool { true }
    func start(notify: @escaping @Sendable () -> Void) -> Bool { manual.start(notify: notify) }
    func stop() { manual.stop() }
    func ring() { manual.ring() }
    func mayStillBePublishing() -> Bool { publishing }
}

/// One commit of `store`: a secret sealed under `name`.
private func putSecret(_ name: String, in store: SQLiteStateStore) throws {
    let now = Timestamp(milliseconds: 1_795_161_600_000)
    let sealed = SealedSecret(id: SecretID(name: name), box: [1, 2, 3], keyCheck: "check", size: 3, updatedAt: now, updatedBy: "test")
    try store.write { writer throws(StoreError) in try writer.putSecret(sealed) }
}
