import Foundation
import OrlCore
import OrlJSON
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
