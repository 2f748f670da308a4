import Foundation
import OrlController
import OrlCore
import OrlJSON
import OrlStore
import OrlYAML
import Testing

/// The controller's runs driver in process, on a real store, with a clock the test sets:
/// cron slots fire once each, across a restart (a new driver on the same state), and
/// overdue tasks are given up on.
@Suite(.serialized) struct RunsDriverTests {
    final class Clock: @unchecked Sendable {
        private let lock = NSLock()
        private var time: Timestamp
        init(_ time: Timestamp) { self.time = time }
        var now: Timestamp {
            get { lock.withLock { time } }
            set { lock.withLock { time = newValue } }
        }
    }

    final class Lines: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var all: [String] { lock.withLock { lines } }
    }

    static let fleet =
        runTestFleet + """

            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: nightly}
            spec:
              triggers: [{type: manual}, {type: schedule, cron: "*/5 * * * *"}]
              steps:
                - {id: only, agent: worker, heartbeatTimeout: 30s}
            """

    /// 10:02 UTC on 2026-11-20, when the fleet is applied.
    static let appliedAt = Timestamp(milliseconds: 1_795_161_600_000 + 2 * 3_600_000 + 2 * 60_000)

    func applied(_ directory: String) throws -> SQLiteStateStore {
        let store = try SQLiteStateStore(directory: directory)
        let report = ManifestValidation.validate([YAMLParser().parse(Self.fleet, file: "fleet.yaml")])
        try #require(report.isValid, "\(report.diagnostics.map(\.message))")
        _ = try ApplyOperation.apply(report.fleet, to: store, options: ApplyOptions(source: "test", appliedBy: "test"), now: Self.appliedAt)
        return store
    }

    func scheduledRuns(_ store: SQLiteStateStore) throws -> [RunRecord] {
        try store.readRuns { reader throws(StoreError) in try reader.runs(namespace: nil, workflow: "nightly", limit: 100) }
    }

    @Test func cronSlotsFireOnceEachAcrossARestart() async throws {
        let work = try TemporaryDirectory()
        let directory = work.url.appendingPathComponent("state").path
        let store = try applied(directory)
        let clock = Clock(Self.appliedAt.adding(.seconds(30)))
        let lines = Lines()
        func driver() -> RunsDriver {
            RunsDriver(store: store, log: { lines.append($0.textLine) }, clock: { clock.now })
        }
        let first = driver()
        // 10:02:30: the 10:00 slot came before the apply, so it does not fire.
        await first.tick()
        #expect(try scheduledRuns(store).isEmpty)
        clock.now = Self.appliedAt.adding(.seconds(3 * 60 + 1))  // 10:05:01
        await first.tick()
        await first.tick()
        var runs = try scheduledRuns(store)
        #expect(runs.count == 1)
        #expect(runs.first?.trigger == .schedule(cron: "*/5 * * * *", slot: Self.appliedAt.adding(.seconds(3 * 60))))
        #expect(lines.all.contains { $0.contains("run Run/\(runs[0].id): Started: workflow nightly for slot 2026-11-20T10:05:00Z") })

        // A new driver (the controller restarted) does not fire 10:05 again...
        let second = driver()
        clock.now = Self.appliedAt.adding(.seconds(7 * 60))  // 10:09
        await second.tick()
        #expect(try scheduledRuns(store).count == 1)
        // ...and fires the next slot once, even when it wakes up late.
        clock.now = Self.appliedAt.adding(.seconds(11 * 60 + 30))  // 10:13:30
        await second.tick()
        await second.tick()
        runs = try scheduledRuns(store)
        #expect(runs.count == 2)
        #expect(runs.first?.trigger == .schedule(cron: "*/5 * * * *", slot: Self.appliedAt.adding(.seconds(8 * 60))))
    }

    /// On a node, only the driver of the node holding the `runs` role fires slots: two
    /// drivers, one leader at a time, each slot once; the role moves and the other fires.
    @Test func onlyTheRunsLeaderFiresCronSlots() async throws {
        let work = try TemporaryDirectory()
        let directory = work.url.appendingPathComponent("state").path
        let store = try applied(directory)
        let clock = Clock(Self.appliedAt.adding(.seconds(3 * 60 + 1)))  // 10:05:01
        let leader = Lines()
        leader.append("a")
        let a = RunsDriver(store: store, log: { _ in }, clock: { clock.now }, leader: { leader.all.last == "a" })
        let b = RunsDriver(
            store: try SQLiteStateStore(directory: directory), log: { _ in }, clock: { clock.now }, leader: { leader.all.last == "b" })
        await b.tick()
        #expect(try scheduledRuns(store).isEmpty)
        await a.tick()
        #expect(try scheduledRuns(store).count == 1)
        // The role moves to b: a fires nothing more, b fires the next slot (and not 10:05 again).
        leader.append("b")
        clock.now = Self.appliedAt.adding(.seconds(8 * 60 + 1))  // 10:10:01
        await a.tick()
        #expect(try scheduledRuns(store).count == 1)
        await b.tick()
        await b.tick()
        #expect(try scheduledRuns(store).count == 2)
    }

    /// The driver sleeps until the next thing due: the next cron slot while nothing
    /// runs, a claimed task's lease once one does.
    @Test func theNextWakeIsTheNextCronSlotOrLease() async throws {
        let work = try TemporaryDirectory()
        let store = try applied(work.url.appendingPathComponent("state").path)
        let clock = Clock(Self.appliedAt.adding(.seconds(30)))  // 10:02:30
        let driver = RunsDriver(store: store, log: { _ in }, clock: { clock.now })
        await driver.tick()
        #expect(await driver.nextWake() == Self.appliedAt.adding(.seconds(3 * 60)))  // 10:05
        let operations = RunOperations(store: store)
        _ = try operations.start(.init(workflow: ResourceID(kind: "Workflow", name: "nightly"), by: "test"), now: clock.now, random: 1)
        _ = try #require(try operations.claim(agent: ResourceID(kind: "Agent", name: "worker"), now: clock.now))
        // The heartbeat timeout is 30 s: the lease ends before the slot.
        #expect(await driver.nextWake() == clock.now.adding(.seconds(30)))
    }

    @Test func overdueTasksAreRetriedOnTheDriversTicks() async throws {
        let work = try TemporaryDirectory()
        let store = try applied(work.url.appendingPathComponent("state").path)
        let clock = Clock(Self.appliedAt)
        let lines = Lines()
        let driver = RunsDriver(store: store, log: { lines.append($0.textLine) }, clock: { clock.now })
        let operations = RunOperations(store: store)
        let run = try operations.start(
            .init(workflow: ResourceID(kind: "Workflow", name: "nightly"), by: "test"), now: clock.now, random: 1)
        let worker = ResourceID(kind: "Agent", name: "worker")
        let task = try #require(try operations.claim(agent: worker, now: clock.now))
        clock.now = clock.now.adding(.seconds(29))
        await driver.tick()
        #expect(try store.readRuns { reader throws(StoreError) in try reader.steps(of: run.id) }.first?.state == .running)
        clock.now = clock.now.adding(.seconds(1))
        await driver.tick()
        let step = try store.readRuns { reader throws(StoreError) in try reader.steps(of: run.id) }.first
        #expect(step?.state == .deadLetter, "one attempt only: the lease expiry dead-letters it")
        #expect(try store.readRuns { reader throws(StoreError) in try reader.run(run.id) }?.phase == .failed)
        #expect(lines.all.contains { $0.contains("run Run/\(run.id): DeadLetter: step \"only\" failed after 1 attempt: no heartbeat") })
        #expect(throws: RunError.self) { try operations.heartbeat(task.id, agent: worker, now: clock.now) }
    }
}
