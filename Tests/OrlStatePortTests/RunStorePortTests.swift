import Foundation
import OrlCore
import OrlJSON
import OrlTestSupport
import Synchronization
import Testing

/// A fleet of one agent and the workflows these tests run, as JSON manifests.
let runManifests = [
    #"{"apiVersion":"orl.dev/v1","kind":"ModelProvider","metadata":{"name":"sim"},"spec":{"apiStyle":"simulated","models":[{"name":"small","pricing":{"input":0.1,"output":0.1}}]}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Agent","metadata":{"name":"worker"},"spec":{"model":"sim/small","runtime":{"command":"/bin/true"}}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Policy","metadata":{"name":"all"},"spec":{"appliesTo":{"agents":["worker"]},"allow":{"models":["sim/*"]}}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Workflow","metadata":{"name":"one"},"spec":{"steps":[{"id":"only","agent":"worker","heartbeatTimeout":"30s"}]}}"#,
    #"{"apiVersion":"orl.dev/v1","kind":"Workflow","metadata":{"name":"two"},"spec":{"steps":[{"id":"a","agent":"worker","retry":{"attempts":3}},{"id":"b","agent":"worker","dependsOn":["a"],"heartbeatTimeout":"30s","retry":{"attempts":2,"backoff":"1s"}},{"id":"gate","approval":{"timeout":"1h"},"dependsOn":["a"]}]}}"#,
]

private let worker = ResourceID(kind: "Agent", name: "worker")
private let start = Timestamp(milliseconds: 1_795_161_600_000)

/// The `RunStore` port, driven through the run engine (`RunOperations`) as the API server
/// drives it, against every backend.
@Suite struct RunStorePortTests {
    private func fleet(_ backend: Backend) throws -> TestState {
        let state = try TestState(backend)
        try state.open().write { writer throws(StoreError) in
            for json in runManifests {
                let root = try! JSONParser.parse(json, file: "test.json")
                let manifest = CanonicalJSON.manifest(root)
                let id = ResourceID(kind: root["kind"]!.string!, name: root["metadata"]!["name"]!.string!)
                var resource = stored(id, manifest: manifest.text)
                resource.specHash = manifest.specHash
                try writer.put(resource)
            }
        }
        return state
    }

    private func startRun(_ workflow: String, in store: any RunStore, at time: Timestamp = start, random: UInt32 = 1) throws -> RunRecord {
        try RunOperations(store: store).start(
            .init(workflow: ResourceID(kind: "Workflow", name: workflow), by: "test"), now: time, random: random)
    }

    /// Twenty one-task runs; two connections (as two API servers, or two nodes, would have)
    /// claim them at once until none is left: every task is handed out exactly once.
    @Test(arguments: Backend.available) func twoClaimersRacingHandOutEveryTaskOnce(_ backend: Backend) throws {
        let state = try fleet(backend)
        let setup = try state.open()
        for i in 0..<20 { _ = try startRun("one", in: setup, random: UInt32(i)) }
        let claimers = [try state.open(), try state.open()]
        let claimed = Mutex<[[String]]>([[], []])
        let failures = Failures()
        onThreads(
            claimers.enumerated().map { i, store in
                {
                    let operations = RunOperations(store: store)
                    do {
                        while let task = try operations.claim(agent: worker, now: start) {
                            claimed.withLock { $0[i].append(task.id.description) }
                        }
                    } catch {
                        failures.record(error)
                    }
                }
            })
        #expect(failures.all.isEmpty)
        let all = claimed.withLock { $0 }
        #expect(all[0].count + all[1].count == 20)
        #expect(Set(all[0] + all[1]).count == 20, "a task was handed out twice")
        let states = try setup.readRuns { reader throws(StoreError) in
            var states: [StepState] = []
            for run in try reader.runs(namespace: nil, workflow: nil, limit: 100) { states += try reader.steps(of: run.id).map(\.state) }
            return states
        }
        #expect(states == Array(repeating: .running, count: 20))
    }

    /// A first attempt, running then succeeded, is told by its step row (the run
    /// operations store no attempt row for it); a row an older orlctl stored at its claim
    /// reads the same once the step succeeds.
    @Test(arguments: Backend.available) func aFirstAttemptIsReadFromItsStep(_ backend: Backend) throws {
        let state = try fleet(backend)
        let store = try state.open()
        let operations = RunOperations(store: store)
        let run = try startRun("two", in: store)
        func attempts() throws -> [String] {
            try store.readRuns { reader throws(StoreError) in try reader.attempts(of: run.id) }.map { attempt in
                let started = attempt.startedAt.milliseconds - start.milliseconds
                let ended = attempt.endedAt.map { "\($0.milliseconds - start.milliseconds)" } ?? ""
                return "\(attempt.step)/\(attempt.attempt) \(attempt.outcome.rawValue) \(started)-\(ended)"
            }
        }
        let a = try #require(try operations.claim(agent: worker, now: start))
        #expect(try attempts() == ["a/1 Running 0-"])
        let done = try operations.completeAndClaim(
            a.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(2)))
        let b = try #require(done.next)
        #expect(try attempts() == ["a/1 Succeeded 0-2000", "b/1 Running 2000-"])
        try store.writeRuns { writer throws(StoreError) in
            try writer.put(AttemptRecord(run: run.id, step: "b", attempt: 1, agent: worker, startedAt: start.adding(.seconds(2))))
        }
        try operations.complete(b.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(3)))
        #expect(try attempts() == ["a/1 Succeeded 0-2000", "b/1 Succeeded 2000-3000"])
    }

    @Test(arguments: Backend.available) func anExpiredLeaseIsRetriedUnderTheSameKey(_ backend: Backend) throws {
        let state = try fleet(backend)
        let store = try state.open()
        let operations = RunOperations(store: store)
        let run = try startRun("two", in: store)
        let first = try #require(try operations.claim(agent: worker, now: start))
        #expect(try operations.sweep(now: start.adding(.seconds(59))) { 0 }.isEmpty)
        #expect(try store.readRuns { reader throws(StoreError) in try reader.nextDue() } == start.adding(.seconds(60)))
        #expect(try operations.sweep(now: start.adding(.seconds(60))) { 0 }.map(\.reason) == ["Retrying"])
        // attempt 1 failed; the retry waits for its 1 s backoff.
        #expect(try operations.claim(agent: worker, now: start.adding(.seconds(60))) == nil)
        let second = try #require(try operations.claim(agent: worker, now: start.adding(.seconds(61))))
        #expect(second.id.attempt == 2 && second.idempotencyKey == first.idempotencyKey && second.idempotencyKey == "\(run.id)/a")
        #expect {
            try operations.complete(first.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(62)))
        } throws: { ($0 as? RunError)?.kind == .conflict }
        try operations.complete(second.id, agent: worker, output: JSONParser.parse(#"{"v":1}"#, file: ""), now: start.adding(.seconds(62)))
        let (attempts, values, steps, approvals) = try store.readRuns { reader throws(StoreError) in
            (
                try reader.attempts(of: run.id), try reader.values(of: run.id), try reader.steps(of: run.id),
                try reader.pendingApprovals(namespace: nil)
            )
        }
        #expect(attempts.map(\.outcome) == [.leaseExpired, .succeeded])
        #expect(attempts.first?.error == "no heartbeat from agent \"worker\" for 1m")
        #expect(values.map(\.key) == ["a"] && values.first?.value == #"{"v":1}"# && values.first?.version == 1)
        #expect(steps.map(\.state) == [.succeeded, .ready, .waitingApproval])
        #expect(approvals.map(\.id) == ["gate"])
        let listed = try store.readRuns { reader throws(StoreError) in try reader.runs(namespace: "default", workflow: "two", limit: 10) }
        #expect(listed.map(\.id) == [run.id])
        #expect(try store.readRuns { reader throws(StoreError) in try reader.plan(of: run.id) }.steps.count == 3)
    }

    /// Each transaction that writes runs moves the `runs` topic by one, however many rows
    /// and statements it wrote (a step's dozen moved it six times when each row counted),
    /// and one that writes no run table, or commits nothing, leaves it.
    /// A Running step is due at the earlier of its lease and its deadline, a gate waiting
    /// for approval at its deadline: one index has both (what the sweep and the next
    /// wake-up read), and its answers are those of the two it replaced.
    @Test(arguments: Backend.available) func aStepIsDueAtItsLeaseOrItsDeadlineWhicheverComesFirst(_ backend: Backend) throws {
        let state = try fleet(backend)
        let store = try state.open()
        let operations = RunOperations(store: store)
        // "one": a 30 s heartbeat timeout. "two": `a` first (the default 60 s lease), then
        // `b` and the gate (its 1 h timeout).
        let one = try startRun("one", in: store, random: 1)
        let two = try startRun("two", in: store, random: 2)
        let task = try #require(try operations.claim(agent: worker, now: start))
        #expect(task.id.run == one.id)
        let a = try #require(try operations.claim(agent: worker, now: start.adding(.seconds(10))))
        #expect(a.id.run == two.id)
        try operations.complete(a.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(20)))
        func due(at seconds: Int64) throws -> [String] {
            try store.readRuns { reader throws(StoreError) in
                try reader.dueSteps(at: start.adding(.seconds(seconds)), limit: 10).map { "\($0.run == one.id ? "one" : "two")/\($0.id)" }
            }
        }
        let next = try store.readRuns { reader throws(StoreError) in try reader.nextDue() }
        #expect(next == start.adding(.seconds(30)))
        #expect(try due(at: 29).isEmpty)
        #expect(try due(at: 30) == ["one/only"])
        // The gate waits until 20 s + 1 h; `b` is Ready, not yet due for anything.
        #expect(try due(at: 3_619).sorted() == ["one/only"])
        #expect(try due(at: 3_620).sorted() == ["one/only", "two/gate"])
        let running = try store.readRuns { reader throws(StoreError) in try reader.runningSteps(agent: worker).map(\.id) }
        #expect(running == ["only"])
        let b = try #require(try operations.claim(agent: worker, now: start.adding(.seconds(25))))
        #expect(b.id.step == "b")
        #expect(try due(at: 54) == ["one/only"])
        #expect(try due(at: 55).sorted() == ["one/only", "two/b"])
        let all = try store.readRuns { reader throws(StoreError) in try reader.runningSteps(agent: nil).map(\.id) }
        #expect(all.sorted() == ["b", "only"])
    }

    @Test(arguments: Backend.available) func theRunsTopicMovesOncePerTransactionThatWritesRuns(_ backend: Backend) throws {
        let state = try fleet(backend)
        let store = try state.open()
        let watcher = try state.open()
        let operations = RunOperations(store: store)
        var last = try watcher.changeGenerations()
        func moves() throws -> (runs: Int64, events: Int64) {
            let now = try watcher.changeGenerations()
            defer { last = now }
            return (now[.runs]! - last[.runs]!, now[.events]! - last[.events]!)
        }
        _ = try startRun("one", in: store)
        #expect(try moves() == (1, 1))
        let task = try #require(try operations.claim(agent: worker, now: start))
        #expect(try moves() == (1, 0))
        try operations.complete(task.id, agent: worker, output: JSONParser.parse(#"{"v":1}"#, file: ""), now: start)
        #expect(try moves() == (1, 1))
        // Refused: nothing written, nothing moved.
        #expect(throws: RunError.self) {
            try operations.complete(task.id, agent: worker, output: JSONParser.parse(#"{"v":2}"#, file: ""), now: start)
        }
        #expect(try moves() == (0, 0))
        // A cron slot alone is no news to a task poll.
        try store.writeRuns { writer throws(StoreError) in
            try writer.put(CronSlotRecord(workflow: ResourceID(kind: "Workflow", name: "one"), cron: "* * * * *", slot: start, run: nil))
        }
        #expect(try moves() == (0, 0))
        try store.request(
            ToolApproval(
                id: "call-1", agent: worker, tool: "fs/write", arguments: "{}", requestedAt: start, expiresAt: start.adding(.seconds(60))))
        #expect(try moves().runs == 1)
        // Retention that deletes runs moves it; one that deletes none does not.
        #expect(try store.retain(RetentionPolicy(runsMaxCount: 1), now: start).runs == 0)
        #expect(try moves() == (0, 0))
        #expect(try store.retain(RetentionPolicy(runsMaxCount: 0), now: start).runs == 1)
        #expect(try moves() == (1, 0))
        // Importing tables rewrites the run tables.
        let tables = try store.exportTables()
        try store.importTables(tables, replace: true)
        #expect(try moves().runs == 1)
    }

    /// A claim is tied to the process that made it: when that process ends, its attempt is
    /// given up at once (no wait for the lease) and retried without backoff; a claim of
    /// the process that replaced it is kept, and the dead process's late answer refused.
    @Test(arguments: Backend.available) func anAttemptOfAProcessThatEndedIsRetriedAtOnce(_ backend: Backend) throws {
        let state = try fleet(backend)
        let store = try state.open()
        let operations = RunOperations(store: store)
        let run = try startRun("two", in: store)
        let first = try #require(try operations.claim(agent: worker, claimant: "old", now: start))
        #expect(try store.readRuns { reader throws(StoreError) in try reader.step(of: run.id, index: 0) }?.claimant == "old")
        // Another process's end, or the same process still live, gives nothing up.
        #expect(try operations.releaseEndedClaims([worker: .only("other")], now: start.adding(.seconds(1))).isEmpty)
        #expect(try operations.releaseEndedClaims([worker: .allBut("old")], now: start.adding(.seconds(1))).isEmpty)
        // The agent restarted in place: its new process took over (heartbeatTimeout is 60 s).
        let events = try operations.releaseEndedClaims([worker: .allBut("new")], now: start.adding(.seconds(2)))
        #expect(events.map(\.reason) == ["Retrying"])
        #expect(events.first?.message.contains("agent default/worker ended while working on it") == true)
        let second = try #require(try operations.claim(agent: worker, claimant: "new", now: start.adding(.seconds(2))))
        #expect(second.id.attempt == 2 && second.idempotencyKey == first.idempotencyKey)
        // The new process's claim survives the same comparison made again.
        #expect(try operations.releaseEndedClaims([worker: .allBut("new")], now: start.adding(.seconds(3))).isEmpty)
        #expect {
            try operations.complete(first.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: start.adding(.seconds(3)))
        } throws: { ($0 as? RunError)?.kind == .conflict }
        // Attempts are counted: the last one's process ends too, and the step is a dead letter.
        #expect(try operations.releaseEndedClaims([worker: .only("new")], now: start.adding(.seconds(4))).map(\.reason) == ["Retrying"])
        let third = try #require(try operations.claim(agent: worker, claimant: "newest", now: start.adding(.seconds(4))))
        #expect(third.id.attempt == 3)
        #expect(
            try operations.releaseEndedClaims([worker: .only("newest")], now: start.adding(.seconds(4))).map(\.reason).contains(
                "DeadLetter"))
        let (attempts, steps, phase) = try store.readRuns { reader throws(StoreError) in
            (try reader.attempts(of: run.id), try reader.steps(of: run.id), try reader.run(run.id)?.phase)
        }
        #expect(attempts.map(\.outcome) == [.leaseExpired, .leaseExpired, .leaseExpired])
        #expect(attempts.first?.error?.hasPrefix("agent default/worker ended while working on it") == true)
        #expect(steps.first?.state == .deadLetter && steps.first?.claimant == nil)
        #expect(phase == .failed)
        // A claim made without a claimant is left to its lease.
        let other = try startRun("one", in: store, at: start.adding(.seconds(5)), random: 2)
        _ = try #require(try operations.claim(agent: worker, now: start.adding(.seconds(5))))
        #expect(try operations.releaseEndedClaims([worker: .allBut("newer")], now: start.adding(.seconds(6))).isEmpty)
        #expect(try store.readRuns { reader throws(StoreError) in try reader.steps(of: other.id) }.map(\.state) == [.running])
    }
}

/// The `ToolApprovalStore` and `SpendHistory` ports, against every backend.
@Suite struct ToolApprovalAndSpendPortTests {
    @Test(arguments: Backend.available) func aToolApprovalIsDecidedOnceWithItsEvents(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.openAll()
        let requested = Timestamp(milliseconds: 1_000)
        let approval = ToolApproval(
            id: "call-ab12", agent: agent("writer"), tool: "fs/write", arguments: #"{"path":"/tmp/x"}"#, requestedAt: requested,
            expiresAt: Timestamp(milliseconds: 61_000))
        try store.request(approval)
        #expect(try store.toolApproval("call-ab12") == approval)
        #expect(try store.pendingToolApprovals(namespace: nil) == [approval])
        #expect(try store.pendingToolApprovals(namespace: "team-a").isEmpty)
        let decided = try store.decide("call-ab12", approve: true, by: "alice", reason: "fine", now: Timestamp(milliseconds: 2_000))
        #expect(decided.state == .approved && decided.decidedBy == "alice")
        #expect(try store.toolApproval("call-ab12") == decided)
        #expect(try store.pendingToolApprovals(namespace: nil).isEmpty)
        // A second decision is refused, and records nothing.
        #expect(throws: RunError.self) {
            try store.decide("call-ab12", approve: false, by: "bob", reason: nil, now: Timestamp(milliseconds: 3_000))
        }
        #expect(throws: RunError.self) {
            try store.decide("call-none", approve: true, by: "bob", reason: nil, now: Timestamp(milliseconds: 3_000))
        }
        #expect(try store.read { s throws(StoreError) in try s.events(for: nil, limit: 10) }.count == 2)
    }

    @Test(arguments: Backend.available) func spendIsSummedPerDay(_ backend: Backend) throws {
        let state = try TestState(backend)
        let store = try state.openAll()
        let day = Int64(86_400_000)
        func call(_ name: String, at time: Int64, usd: Double) -> LedgerEntry {
            LedgerEntry(
                time: Timestamp(milliseconds: time), agent: agent(name), model: "sim/small", usage: TokenUsage(prompt: 10, completion: 5),
                usd: usd, latencyMilliseconds: 1, requestID: "r\(time)", outcome: "ok")
        }
        try store.write { s throws(StoreError) in
            try s.append([
                call("writer", at: 20_000 * day + 5, usd: 1), call("writer", at: 20_000 * day + 9, usd: 2),
                call("reader", at: 20_001 * day, usd: 4),
            ])
        }
        let all = try store.dailySpend(since: Timestamp(milliseconds: 20_000 * day), agent: nil)
        #expect(all == [20_000: Charge(usd: 3, tokens: 30), 20_001: Charge(usd: 4, tokens: 15)])
        #expect(
            try store.dailySpend(since: Timestamp(milliseconds: 20_000 * day), agent: agent("reader")) == [
                20_001: Charge(usd: 4, tokens: 15)
            ])
        #expect(try store.dailySpend(since: Timestamp(milliseconds: 20_001 * day), agent: nil) == [20_001: Charge(usd: 4, tokens: 15)])
        #expect(
            try store.dailySpend(since: Timestamp(milliseconds: 20_000 * day), until: Timestamp(milliseconds: 20_001 * day), agent: nil)
                == [
                    20_000: Charge(usd: 3, tokens: 30)
                ])
    }
}
