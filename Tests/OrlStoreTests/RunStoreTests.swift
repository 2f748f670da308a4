import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Testing

@testable import OrlStore

/// A fleet of one agent and the workflows these tests run, as JSON manifests.
let runManifests = [
    #"{"apiVersion":"orl.dev/v1","kind":"ModelProvider","metadata":{"name":"sim"},"spec":{"apiStyle":"simulated","models":[{"name":"small","pricing":{"input":0.1,"output":0.1}}]}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Agent","metadata":{"name":"worker"},"spec":{"model":"sim/small","runtime":{"command":"/bin/true"}}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Policy","metadata":{"name":"all"},"spec":{"appliesTo":{"agents":["worker"]},"allow":{"models":["sim/*"]}}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Workflow","metadata":{"name":"one"},"spec":{"steps":[{"id":"only","agent":"worker","heartbeatTimeout":"30s"}]}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Workflow","metadata":{"name":"two"},"spec":{"steps":[{"id":"a","agent":"worker","retry":{"attempts":3}},{"id":"b","agent":"worker","dependsOn":["a"],"heartbeatTimeout":"30s","retry":{"attempts":2,"backoff":"1s"}},{"id":"gate","approval":{"timeout":"1h"},"dependsOn":["a"]}]}}"#,
]

let worker = ResourceID(kind: "Agent", name: "worker")
let start = Timestamp(milliseconds: 1_795_161_600_000)

/// Opens the store in `directory` with the fleet applied.
func storeWithFleet(_ directory: String) throws -> SQLiteStateStore {
    let store = try SQLiteStateStore(directory: directory)
    try store.write { writer throws(StoreError) in
        for json in runManifests {
            let manifest = CanonicalJSON.manifest(try! JSONParser.parse(json, file: "test.json"))
            let root = try! JSONParser.parse(json, file: "test.json")
            let id = ResourceID(kind: root["kind"]!.string!, name: root["metadata"]!["name"]!.string!)
            var resource = stored(id, manifest: manifest.text)
            resource.specHash = manifest.specHash
            try writer.put(resource)
        }
    }
    return store
}

func startRun(_ workflow: String, in store: SQLiteStateStore, at time: Timestamp = start, random: UInt32 = 1) throws -> RunRecord {
    try RunOperations(store: store).start(
        .init(workflow: ResourceID(kind: "Workflow", name: workflow), by: "test"), now: time, random: random)
}

@Suite(.serialized) struct RunStoreTests {
    @Test func twoClaimersRacingForOneTaskOneWins() throws {
        try withStateDirectory { directory in
            let setup = try storeWithFleet(directory)
            // Twenty one-task runs; two connections (as two API servers would have) claim
            // them at once until none is left. Every task is handed out exactly once.
            for i in 0..<20 { _ = try startRun("one", in: setup, random: UInt32(i)) }
            let claimers = [try SQLiteStateStore(directory: directory), try SQLiteStateStore(directory: directory)]
            let claimed = Locked<[[String]]>([[], []])
            let failures = Failures()
            let go = DispatchSemaphore(value: 0)
            onThreads(
                claimers.enumerated().map { i, store in
                    {
                        go.wait()
                        let operations = RunOperations(store: store)
                        do {
                            while let task = try operations.claim(agent: worker, now: start) {
                                claimed.withLock { $0[i].append(task.id.description) }
                            }
                        } catch {
                            failures.record(error)
                        }
                    }
                } + [
                    {
                        go.signal()
                        go.signal()
                    }
                ])
            #expect(failures.all.isEmpty)
            let all = claimed.withLock { $0 }
            #expect(all[0].count + all[1].count == 20)
            #expect(Set(all[0] + all[1]).count == 20, "a task was handed out twice")
            let states = try setup.readRuns { reader throws(StoreError) in
                var states: [StepState] = []
                for run in try reader.runs(namespace: nil, workflow: nil, limit: 100) {
                    states += try reader.steps(of: run.id).map(\.state)
                }
                return states
            }
            #expect(states == Array(repeating: .running, count: 20))
        }
    }

    @Test func oneReadyTaskTwoClaimsAtOnce() throws {
        try withStateDirectory { directory in
            let setup = try storeWithFleet(directory)
            for round in 0..<10 {
                _ = try startRun("one", in: setup, random: UInt32(round))
                let stores = [try SQLiteStateStore(directory: directory), try SQLiteStateStore(directory: directory)]
                let winners = Locked(0)
                let go = DispatchSemaphore(value: 0)
                onThreads(
                    stores.map { store in
                        {
                            go.wait()
                            if (try? RunOperations(store: store).claim(agent: worker, now: start)) != nil {
                                winners.withLock { $0 += 1 }
                            }
                        }
                    } + [
                        {
                            go.signal()
                            go.signal()
                        }
                    ])
                #expect(winners.withLock { $0 } == 1)
            }
        }
    }

    @Test func anExpiredLeaseIsRetriedUnderTheSameKey() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let operations = RunOperations(store: store)
            let run = try startRun("two", in: store)
            let first = try #require(try operations.claim(agent: worker, now: start))
            #expect(try operations.sweep(now: start.adding(.seconds(59))) { 0 }.isEmpty)
            let lease = try store.readRuns { reader throws(StoreError) in try reader.nextDue() }
            #expect(lease == start.adding(.seconds(60)))
            let events = try operations.sweep(now: start.adding(.seconds(60))) { 0 }
            #expect(events.map(\.reason) == ["Retrying"])
            // attempt 1 failed; the retry waits for its 1 s backoff.
            #expect(try operations.claim(agent: worker, now: start.adding(.seconds(60))) == nil)
            let second = try #require(try operations.claim(agent: worker, now: start.adding(.seconds(61))))
            #expect(second.id.attempt == 2 && second.idempotencyKey == first.idempotencyKey && second.idempotencyKey == "\(run.id)/a")
            #expect {
                try operations.complete(first.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(62)))
            } throws: { ($0 as? RunError)?.kind == .conflict }
            try operations.complete(
                second.id, agent: worker, output: JSONParser.parse(#"{"v":1}"#, file: ""), now: start.adding(.seconds(62)))
            let attempts = try store.readRuns { reader throws(StoreError) in try reader.attempts(of: run.id) }
            #expect(attempts.map(\.outcome) == [.leaseExpired, .succeeded])
            #expect(attempts.first?.error == "no heartbeat from agent \"worker\" for 1m")
        }
    }

    /// What kill -9 of a controller leaves is what the next one resumes from: every
    /// transaction that committed is there, and nothing else.
    @Test func aReopenedStoreResumesTheRun() throws {
        try withStateDirectory { directory in
            var run: RunRecord
            var inFlight: RunTask
            do {
                let store = try storeWithFleet(directory)
                let operations = RunOperations(store: store)
                run = try startRun("two", in: store)
                let a = try #require(try operations.claim(agent: worker, now: start))
                try operations.complete(a.id, agent: worker, output: JSONParser.parse(#"{"text":"hi"}"#, file: ""), now: start)
                inFlight = try #require(try operations.claim(agent: worker, now: start))
                #expect(inFlight.id.step == "b")
            }
            let store = try SQLiteStateStore(directory: directory)
            let operations = RunOperations(store: store)
            let steps = try store.readRuns { reader throws(StoreError) in try reader.steps(of: run.id) }
            #expect(steps.map(\.state) == [.succeeded, .running, .waitingApproval])
            #expect(try operations.claim(agent: worker, now: start.adding(.seconds(1))) == nil, "a succeeded step is not run again")
            // The agent that outlived the controller can still heartbeat within its lease.
            let lease = try operations.heartbeat(inFlight.id, agent: worker, now: start.adding(.seconds(20)))
            #expect(lease == start.adding(.seconds(50)))
            // One that did not is retried once its lease expires, under the same key.
            #expect(try operations.sweep(now: start.adding(.seconds(50))) { 0 }.map(\.reason) == ["Retrying"])
            let retry = try #require(try operations.claim(agent: worker, now: start.adding(.seconds(51))))
            #expect(retry.id.step == "b" && retry.id.attempt == 2 && retry.idempotencyKey == inFlight.idempotencyKey)
            #expect(retry.dependencies.compactRendered() == #"{"a":{"text":"hi"}}"#)
            let pending = try store.readRuns { reader throws(StoreError) in try reader.pendingApprovals(namespace: nil) }
            #expect(pending.map(\.id) == ["gate"])
            try operations.decide(run: run.id, step: "gate", approve: true, by: "bob", reason: nil, now: start.adding(.seconds(52)))
            try operations.complete(retry.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(53)))
            #expect(try store.readRuns { reader throws(StoreError) in try reader.run(run.id) }?.phase == .succeeded)
        }
    }

    @Test func theBlackboardKeepsEveryVersion() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let run = try startRun("one", in: store)
            let versions = try store.writeRuns { writer throws(StoreError) in
                [
                    try writer.put(BlackboardValue(run: run.id, key: "notes", value: "1", writtenAt: start, step: "only", attempt: 1)),
                    try writer.put(BlackboardValue(run: run.id, key: "notes", value: "2", writtenAt: start, step: "only", attempt: 2)),
                    try writer.put(BlackboardValue(run: run.id, key: "other", value: "3", writtenAt: start, step: nil, attempt: nil)),
                ]
            }
            #expect(versions == [1, 2, 1])
            try store.readRuns { reader throws(StoreError) in
                #expect(try reader.value(of: run.id, key: "notes")?.value == "2")
                #expect(try reader.values(of: run.id).map { "\($0.key)@\($0.version)" } == ["notes@1", "notes@2", "other@1"])
            }
        }
    }

    /// A partial or expression index is used only by a query that names its condition and
    /// expression as it does: each hot query of the runs is planned on its index, not a scan
    /// of every step ever run.
    @Test func theRunQueriesUseTheStepsIndexes() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let database = try Database(path: store.path)
            func plan(_ sql: String) throws -> String {
                try database.withStatement("EXPLAIN QUERY PLAN " + sql, intent: "plan") { s throws(StoreError) in
                    var details: [String] = []
                    while try s.step(intent: "plan") { details.append(s.text(3)) }
                    return details.joined(separator: "; ")
                }
            }
            func uses(_ sql: String, _ expected: String) throws {
                let found = try plan(sql)
                #expect(found.contains(expected), "\(found)")
            }
            try uses(SQLStateAccess.dueStepsSQL, "SEARCH run_steps USING INDEX run_steps_due (<expr><?)")
            try uses(SQLStateAccess.nextDueSQL, "SEARCH run_steps USING INDEX run_steps_due")
            for oneAgent in [false, true] { try uses(SQLStateAccess.runningStepsSQL(ofOneAgent: oneAgent), "USING INDEX run_steps_due") }
            try uses(SQLStateAccess.anyOpenStep, "SEARCH run_steps USING INDEX run_steps_open (run_id=?)")
            try uses(SQLStateAccess.nextClaimableStep, "SEARCH run_steps USING INDEX run_steps_ready")
        }
    }

    /// A state written before the blackboard lost its rowids keeps every value, and the
    /// table is keyed by (run, key, version) alone afterwards.
    @Test func theBlackboardKeepsItsValuesThroughTheMigration() throws {
        try withStateDirectory { directory in
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let path = SQLiteStateStore.databasePath(directory)
            // The schema just before the blackboard's migration, whatever came after it.
            let before = try #require(Schema.migrations.firstIndex { $0.summary.hasPrefix("fewer pages written per step") })
            do {
                let database = try Database(path: path)
                try database.execute("PRAGMA journal_mode = WAL", intent: "test")
                for migration in Schema.migrations[..<before] { try database.execute(migration.sql, intent: migration.summary) }
                try database.execute(
                    """
                    PRAGMA user_version = \(before);
                    INSERT INTO runs (id, namespace, workflow, generation, phase, trigger, input, plan, created_at, created_by)
                    VALUES ('1m7zpgk9g86za', 'default', 'one', 1, 'Running', 'manual', '{}', '{}', 1, 'test');
                    INSERT INTO run_values (run_id, key, version, value, written_at, step, attempt)
                    VALUES ('1m7zpgk9g86za', 'only', 1, '{"a":1}', 2, 'only', 1), ('1m7zpgk9g86za', 'only', 2, '{"a":2}', 3, 'only', 2),
                        ('1m7zpgk9g86za', 'topic:notes', 1, '"n"', 4, NULL, NULL);
                    """, intent: "test")
            }
            let store = try SQLiteStateStore(directory: directory)
            let run = try #require(RunID("1m7zpgk9g86za"))
            let values = try store.readRuns { reader throws(StoreError) in try reader.values(of: run) }
            #expect(
                values.map { "\($0.key)@\($0.version)=\($0.value)" } == [#"only@1={"a":1}"#, #"only@2={"a":2}"#, #"topic:notes@1="n""#])
            #expect(values.map(\.attempt) == [1, 2, nil])
            let database = try Database(path: path)
            let table = try database.withStatement("SELECT sql FROM sqlite_schema WHERE name = 'run_values'", intent: "test") {
                s throws(StoreError) in try s.step(intent: "test") ? s.text(0) : ""
            }
            #expect(table.hasSuffix("WITHOUT ROWID"))
            let autoindexes = "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'sqlite_autoindex_run_values%'"
            #expect(try database.scalar(autoindexes, intent: "test") == 0)
        }
    }

    @Test func aSlotHasAtMostOneRunWhateverTheCaller() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let slot = Timestamp(milliseconds: 1_795_161_600_000)
            let workflow = ResourceID(kind: "Workflow", name: "one")
            let fleet = Fleet.applied(try store.readRuns { reader throws(StoreError) in try reader.resources(kind: nil, namespace: nil) })
                .fleet
            let plan = try RunPlan.compile(fleet[workflow]!, generation: 1, in: fleet).get()
            func insert(_ random: UInt32) throws {
                let run = RunRecord(
                    id: RunID(time: slot, random: random), workflow: workflow, generation: 1,
                    trigger: .schedule(cron: "* * * * *", slot: slot),
                    input: "{}", createdAt: slot, createdBy: "schedule")
                try store.writeRuns { writer throws(StoreError) in
                    try writer.insert(run, plan: plan, steps: RunEngine.initialSteps(of: plan, run: run.id, now: slot))
                }
            }
            try insert(1)
            #expect(throws: StoreError.self) { try insert(2) }
        }
    }

    @Test func aRunsPlanIsCachedWhenItsStartCommitsNotBefore() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            // The start's plan is what its first claim reads, without parsing it back.
            let started = try startRun("two", in: store)
            let cached = try #require(SQLStateAccess.cachedPlan(path: store.path, run: started.id))
            let database = try Database(path: store.path)
            let text = try database.withStatement("SELECT plan FROM runs WHERE id = ?1", intent: "test") { s throws(StoreError) -> String in
                try s.bind(1, started.id.rawValue)
                return try s.step(intent: "test") ? s.text(0) : ""
            }
            #expect(try RunPlan(json: text) == cached)

            // A start rolled back leaves nothing under its id, which a later run may take.
            let workflow = ResourceID(kind: "Workflow", name: "one")
            let fleet = Fleet.applied(try store.readRuns { reader throws(StoreError) in try reader.resources(kind: nil, namespace: nil) })
                .fleet
            let plan = try RunPlan.compile(fleet[workflow]!, generation: 1, in: fleet).get()
            let run = RunRecord(
                id: RunID(time: start, random: 7), workflow: workflow, generation: 1, trigger: .manual, input: "{}", createdAt: start,
                createdBy: "test")
            #expect(throws: StoreError.self) {
                try store.writeRuns { writer throws(StoreError) in
                    try writer.insert(run, plan: plan, steps: RunEngine.initialSteps(of: plan, run: run.id, now: start))
                    throw StoreError("given up before the commit")
                }
            }
            #expect(SQLStateAccess.cachedPlan(path: store.path, run: run.id) == nil)
            #expect(try store.readRuns { reader throws(StoreError) in reader.cachedRun(run.id) } == nil)
            #expect(try store.readRuns { reader throws(StoreError) in try reader.run(run.id) } == nil)
        }
    }

    /// A completion takes the run as this process knew it (`cachedRun`) only when the step
    /// shows the run Running: once another process has cancelled the run, it reads the
    /// run again and tells the agent why it is refused.
    @Test func aCompletionOfARunCancelledElsewhereIsRefusedWithTheRunsPhase() throws {
        try withStateDirectory { directory in
            let store = try storeWithFleet(directory)
            let operations = RunOperations(store: store)
            let run = try startRun("one", in: store)
            let task = try #require(try operations.claim(agent: worker, now: start))
            let known = try #require(try store.readRuns { reader throws(StoreError) in reader.cachedRun(run.id) })
            #expect(known.run.id == run.id && known.run.phase == .running && known.plan.steps.map(\.id) == ["only"])
            // As another process's `orlctl cancel` leaves it, which no cache here sees.
            let other = try Database(path: store.path)
            try other.execute("UPDATE runs SET phase = 'Cancelled', ended_at = \(start.milliseconds)", intent: "test")
            try other.execute("UPDATE run_steps SET state = 'Cancelled', ended_at = \(start.milliseconds)", intent: "test")
            #expect(try store.readRuns { reader throws(StoreError) in reader.cachedRun(run.id) }?.run.phase == .running)
            #expect {
                try operations.complete(task.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start)
            } throws: { error in
                guard let error = error as? RunError else { return false }
                return error.kind == .conflict && error.description.contains("the run cancelled")
            }
            // The run read for the refusal is what the cache now holds.
            #expect(try store.readRuns { reader throws(StoreError) in reader.cachedRun(run.id) }?.run.phase == .cancelled)
        }
    }
}
