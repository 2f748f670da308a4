import OrlCore
import OrlJSON
import OrlYAML
import Testing

/// The resources of a valid fleet as the store would hold them after an apply.
func storedResources(_ yaml: String, appliedAt: Timestamp = Timestamp(milliseconds: 0)) -> [StoredResource] {
    let report = validate(yaml)
    precondition(report.isValid, "the fixture is not valid: \(report.diagnostics.map(\.message))")
    return report.fleet.resources.map { resource in
        let manifest = CanonicalJSON.manifest(resource.document)
        return StoredResource(
            id: resource.id, manifest: manifest.text, specHash: manifest.specHash, generation: 1, resourceVersion: 1, source: "test",
            file: resource.file, line: 1, revision: nil, appliedAt: appliedAt, appliedBy: "test")
    }
}

/// Two agents that may hand off to each other, and the workflows the tests run.
let runFleet = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models: [{name: small, pricing: {input: 0.1, output: 0.1}}]
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: worker}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: reviewer}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: everyone}
    spec:
      appliesTo: {agents: [worker, reviewer]}
      allow: {models: ["sim/*"], handoffs: [worker, reviewer]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: pipeline}
    spec:
      inputs:
        - {name: topic, required: true}
        - {name: tone, default: plain}
      steps:
        - id: a
          agent: worker
          prompt: Research the topic.
          inputs: {topic: {input: topic}}
        - id: b
          agent: reviewer
          dependsOn: [a]
          inputs: {text: {step: a, key: text}, tone: {input: tone}, style: {value: {words: 300}}}
        - id: c
          agent: worker
          dependsOn: [b]
          inputs: {first: {step: a}}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: fan}
    spec:
      steps:
        - {id: split, agent: worker}
        - {id: x, agent: worker, dependsOn: [split]}
        - {id: y, agent: worker, dependsOn: [split]}
        - {id: z, agent: worker, dependsOn: [split]}
        - {id: join, agent: worker, dependsOn: [x, y, z]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: flaky}
    spec:
      steps:
        - id: try
          agent: worker
          retry: {attempts: 3, backoff: 1s, maxBackoff: 2s}
          timeout: 5m
          heartbeatTimeout: 60s
        - {id: after, agent: worker, dependsOn: [try]}
        - {id: other, agent: reviewer}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: gated}
    spec:
      steps:
        - {id: draft, agent: worker}
        - id: review
          dependsOn: [draft]
          approval: {message: Publish it?, timeout: 1h}
        - {id: publish, agent: worker, dependsOn: [review]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: lenient}
    spec:
      triggers:
        - {type: manual}
        - {type: schedule, cron: "*/5 * * * *"}
      steps:
        - id: optional
          agent: worker
          continueOnFailure: true
        - id: auto
          approval: {timeout: 10m, onTimeout: approve}
        - {id: last, agent: worker, dependsOn: [optional, auto]}
    """

/// A run store with the fleet applied, the operations over it, and a clock the test moves.
final class RunHarness {
    let store: InMemoryRunStore
    let operations: RunOperations
    var now = Timestamp(milliseconds: 1_795_161_600_000)
    private var randomness: UInt32 = 0

    init(_ yaml: String = runFleet, appliedAt: Timestamp = Timestamp(milliseconds: 0)) {
        store = InMemoryRunStore(resources: storedResources(yaml, appliedAt: appliedAt))
        operations = RunOperations(store: store)
    }

    static func agent(_ name: String) -> ResourceID { ResourceID(kind: "Agent", name: name) }

    func start(_ workflow: String, _ input: [(name: String, value: String)] = []) throws -> RunRecord {
        randomness += 1
        return try operations.start(
            .init(workflow: ResourceID(kind: "Workflow", name: workflow), input: input, by: "alice"), now: now, random: randomness)
    }

    func claim(_ agent: String) throws -> RunTask? { try operations.claim(agent: Self.agent(agent), now: now) }

    @discardableResult
    func complete(_ task: RunTask, _ output: String = "{}") throws -> StepRecord {
        try operations.complete(task.id, agent: task.agent, output: try JSONParser.parse(output, file: "<test>"), now: now)
    }

    @discardableResult
    func fail(_ task: RunTask, _ error: String = "boom", retry: Bool = true) throws -> StepRecord {
        try operations.fail(task.id, agent: task.agent, error: error, retry: retry, now: now, random: 0)
    }

    func sweep() throws -> [StoreEvent] { try operations.sweep(now: now) { 0 } }

    func advance(_ duration: Duration) { now = now.adding(duration) }

    func states(_ run: RunRecord) -> [String: StepState] {
        Dictionary(uniqueKeysWithValues: (store.snapshot.steps[run.id] ?? []).map { ($0.id, $0.state) })
    }

    func run(_ run: RunRecord) -> RunRecord { store.snapshot.runs[run.id]! }

    /// The run's attempts as the port reports them (`AttemptRecord.reported`).
    func attempts(_ run: RunRecord) throws -> [AttemptRecord] {
        try store.readRuns { reader throws(StoreError) in try reader.attempts(of: run.id) }
    }

    func reasons(_ run: RunRecord) -> [String] { store.snapshot.events.filter { $0.resource == run.eventSubject }.map(\.reason) }

    /// Claims and completes every task of `agent` until none is left; returns the steps.
    func drain(_ agent: String) throws -> [String] {
        var done: [String] = []
        while let task = try claim(agent) {
            try complete(task)
            done.append(task.id.step)
        }
        return done
    }
}

func member(_ value: JSONValue, _ key: String) -> JSONValue? {
    guard case .object(let members) = value else { return nil }
    return members.first { $0.0 == key }?.1
}

func string(_ value: JSONValue?) -> String? {
    if case .string(let s)? = value { return s }
    return nil
}

@Suite struct RunOperationsTests {
    @Test func aPipelineRunsStepByStepWithItsInputs() throws {
        let h = RunHarness()
        let run = try h.start("pipeline", [("topic", "rivers")])
        #expect(run.phase == .running && run.input == #"{"topic":"rivers","tone":"plain"}"#)
        #expect(h.states(run) == ["a": .ready, "b": .pending, "c": .pending])
        #expect(try h.claim("reviewer") == nil)

        let a = try #require(try h.claim("worker"))
        #expect(a.id.step == "a" && a.id.attempt == 1 && a.prompt == "Research the topic.")
        #expect(string(member(a.inputs, "topic")) == "rivers")
        #expect(a.idempotencyKey == "\(run.id)/a")
        #expect(try h.claim("worker") == nil, "a running task is nobody else's")
        try h.complete(a, #"{"text": "Rivers flow.", "n": 2}"#)

        let b = try #require(try h.claim("reviewer"))
        #expect(b.id.step == "b")
        // The stored manifest is canonical JSON, so inputs come in key order.
        #expect(b.inputs.compactRendered() == #"{"style":{"words":300},"text":"Rivers flow.","tone":"plain"}"#)
        #expect(b.dependencies.compactRendered() == #"{"a":{"n":2,"text":"Rivers flow."}}"#)
        #expect(b.runInput.compactRendered() == #"{"topic":"rivers","tone":"plain"}"#)
        try h.complete(b, #"{"ok": true}"#)

        let c = try #require(try h.claim("worker"))
        // c reads a (further upstream) by name, and receives only b's output as a dependency.
        #expect(c.inputs.compactRendered() == #"{"first":{"n":2,"text":"Rivers flow."}}"#)
        #expect(c.dependencies.compactRendered() == #"{"b":{"ok":true}}"#)
        try h.complete(c)

        #expect(h.run(run).phase == .succeeded)
        #expect(h.run(run).endedAt == h.now)
        #expect(h.states(run).values.allSatisfy { $0 == .succeeded })
        #expect(h.reasons(run) == ["Started", "Succeeded"])
        #expect(h.store.snapshot.values.map(\.key) == ["a", "b", "c"])
    }

    @Test func aFanOutRunsInParallelAndTheJoinWaitsForAll() throws {
        let h = RunHarness()
        let run = try h.start("fan")
        try h.complete(try #require(try h.claim("worker")))
        let branches = try (0..<3).map { _ in try #require(try h.claim("worker")) }
        #expect(Set(branches.map(\.id.step)) == ["x", "y", "z"])
        #expect(try h.claim("worker") == nil)
        try h.complete(branches[0], #"{"i": 0}"#)
        try h.complete(branches[1], #"{"i": 1}"#)
        #expect(h.states(run)["join"] == .pending)
        #expect(try h.claim("worker") == nil)
        try h.complete(branches[2], #"{"i": 2}"#)
        let join = try #require(try h.claim("worker"))
        #expect(join.id.step == "join")
        #expect(join.dependencies.compactRendered().contains(#""x":{"i":"#))
        #expect(member(join.dependencies, "y") != nil && member(join.dependencies, "z") != nil)
        try h.complete(join)
        #expect(h.run(run).phase == .succeeded)
    }

    /// A completion that claims next holds the steps it readies until its claim (the one
    /// taken is written once, Running): an older Ready step of another run still comes
    /// first, and the steps not taken are Ready as if written at once.
    @Test func aCompletionThatClaimsNextTakesTheOldestReadyStepHeldOrNot() throws {
        let h = RunHarness()
        let worker = RunHarness.agent("worker")
        let fan = try h.start("fan")
        let split = try #require(try h.claim("worker"))
        h.advance(.seconds(1))
        let pipeline = try h.start("pipeline", [("topic", "rivers")])
        h.advance(.seconds(1))
        // split readies x, y and z now; the pipeline's a has been Ready for a second.
        let first = try h.operations.completeAndClaim(split.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: h.now)
        let a = try #require(first.next)
        #expect(a.id.run == pipeline.id && a.id.step == "a")
        #expect(h.states(fan) == ["split": .succeeded, "x": .ready, "y": .ready, "z": .ready, "join": .pending])
        // a readies the reviewer's b: held, then written Ready; the worker gets x (of x, y
        // and z, Ready at the same time, the first by index).
        h.advance(.seconds(1))
        let second = try h.operations.completeAndClaim(
            a.id, agent: worker, output: JSONParser.parse(#"{"text": "Rivers flow."}"#, file: ""), now: h.now)
        #expect(second.next?.id.run == fan.id && second.next?.id.step == "x")
        #expect(h.states(fan) == ["split": .succeeded, "x": .running, "y": .ready, "z": .ready, "join": .pending])
        #expect(h.states(pipeline) == ["a": .succeeded, "b": .ready, "c": .pending])
        #expect(try h.claim("reviewer")?.id.step == "b")
        // A chain's next step, readied and claimed in one transaction, is Running.
        var task = try #require(second.next)
        for step in ["y", "z"] {
            let done = try h.operations.completeAndClaim(task.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: h.now)
            task = try #require(done.next)
            #expect(task.id.step == step && task.id.attempt == 1)
        }
        let last = try h.operations.completeAndClaim(task.id, agent: worker, output: JSONParser.parse("{}", file: ""), now: h.now)
        #expect(last.next?.id.step == "join" && last.next?.id.attempt == 1)
        #expect(h.states(fan)["join"] == .running)
        let attempts = try h.attempts(fan).map { "\($0.step)/\($0.attempt) \($0.outcome.rawValue)" }
        #expect(attempts == ["split/1 Succeeded", "x/1 Succeeded", "y/1 Succeeded", "z/1 Succeeded", "join/1 Running"])
        // First attempts that run or succeeded are their steps' rows: none stored apart.
        #expect(h.store.snapshot.attempts.filter { $0.run == fan.id }.isEmpty)
    }

    @Test func aFailingStepIsRetriedWithBackoffUnderTheSameKeyThenSucceeds() throws {
        let h = RunHarness()
        let run = try h.start("flaky")
        let first = try #require(try h.claim("worker"))
        let failed = try h.fail(first, "rate limited")
        #expect(failed.state == .ready)
        #expect(failed.readyAt == h.now.adding(.seconds(1)))
        #expect(failed.error == "attempt 1 of 3: rate limited")
        #expect(try h.claim("worker") == nil, "not before the backoff")
        h.advance(.seconds(1))
        let second = try #require(try h.claim("worker"))
        #expect(second.id.attempt == 2 && second.idempotencyKey == first.idempotencyKey)
        try h.fail(second)
        // 1 s doubled, capped at maxBackoff 2 s.
        #expect(h.store.snapshot.steps[run.id]![0].readyAt == h.now.adding(.seconds(2)))
        h.advance(.seconds(2))
        let third = try #require(try h.claim("worker"))
        #expect(third.id.attempt == 3)
        try h.complete(third)
        #expect(h.states(run)["try"] == .succeeded)
        #expect(try h.attempts(run).filter { $0.step == "try" }.map(\.outcome) == [.failed, .failed, .succeeded])
        #expect(h.reasons(run) == ["Started", "Retrying", "Retrying"])
        // The late answer of an earlier attempt is refused.
        #expect(throws: RunError.self) { try h.complete(first) }
    }

    @Test func exhaustedRetriesLeaveADeadLetterAndFailTheRun() throws {
        let h = RunHarness()
        let run = try h.start("flaky")
        let other = try #require(try h.claim("reviewer"))
        for attempt in 1...3 {
            let task = try #require(try h.claim("worker"))
            #expect(task.id.attempt == attempt)
            try h.fail(task, "broken \(attempt)")
            h.advance(.seconds(10))
        }
        let states = h.states(run)
        #expect(states == ["try": .deadLetter, "after": .skipped, "other": .cancelled])
        let record = h.run(run)
        #expect(record.phase == .failed)
        #expect(record.error == "step \"try\": attempt 3 of 3 (the last): broken 3")
        #expect(h.reasons(run) == ["Started", "Retrying", "Retrying", "DeadLetter", "Failed"])
        #expect(try h.attempts(run).filter { $0.step == "try" }.map(\.error) == ["broken 1", "broken 2", "broken 3"])
        #expect(try h.attempts(run).first { $0.step == "other" }?.outcome == .abandoned)
        // The cancelled branch's agent is told to stop.
        #expect {
            try h.operations.heartbeat(other.id, agent: other.agent, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .conflict }
    }

    @Test func notRetryableDeadLettersAtOnce() throws {
        let h = RunHarness()
        let run = try h.start("flaky")
        try h.fail(try #require(try h.claim("worker")), "bad request", retry: false)
        #expect(h.states(run)["try"] == .deadLetter)
        #expect(h.run(run).phase == .failed)
    }

    @Test func aMissedHeartbeatRetriesAndAHeartbeatKeepsTheLease() throws {
        let h = RunHarness()
        let run = try h.start("flaky")
        let task = try #require(try h.claim("worker"))
        h.advance(.seconds(50))
        let lease = try h.operations.heartbeat(task.id, agent: task.agent, now: h.now)
        #expect(lease == h.now.adding(.seconds(60)))
        h.advance(.seconds(59))
        #expect(try h.sweep().isEmpty)
        h.advance(.seconds(1))
        let events = try h.sweep()
        #expect(events.map(\.reason) == ["Retrying"])
        #expect(events[0].message.contains("no heartbeat from agent \"worker\" for 1m"))
        #expect(h.states(run)["try"] == .ready)
        #expect(try h.attempts(run).first?.outcome == .leaseExpired)
        #expect {
            try h.complete(task)
        } throws: { ($0 as? RunError)?.kind == .conflict }
        h.advance(.seconds(1))
        let retry = try #require(try h.claim("worker"))
        #expect(retry.id.attempt == 2 && retry.idempotencyKey == task.idempotencyKey)
    }

    @Test func anAttemptPastItsTimeoutIsGivenUpEvenWhileHeartBeating() throws {
        let h = RunHarness()
        let run = try h.start("flaky")
        let task = try #require(try h.claim("worker"))
        for _ in 0..<5 {
            h.advance(.seconds(59))
            try h.operations.heartbeat(task.id, agent: task.agent, now: h.now)
            #expect(try h.sweep().isEmpty)
        }
        h.advance(.seconds(5))
        #expect(try h.sweep().map(\.message).first?.contains("timed out after 5m") == true)
        #expect(try h.attempts(run).first?.outcome == .timedOut)
        #expect(h.states(run)["try"] == .ready)
    }

    @Test func onlyTheStepsAgentMayAnswerItsTask() throws {
        let h = RunHarness()
        _ = try h.start("pipeline", [("topic", "t")])
        let task = try #require(try h.claim("worker"))
        #expect {
            try h.operations.complete(task.id, agent: RunHarness.agent("reviewer"), output: JSONParser.parse("{}", file: ""), now: h.now)
        } throws: { ($0 as? RunError)?.kind == .forbidden }
    }

    @Test func anApprovalGateWaitsThenApprovedLetsTheRunGoOn() throws {
        let h = RunHarness()
        let run = try h.start("gated")
        try h.complete(try #require(try h.claim("worker")))
        #expect(h.states(run)["review"] == .waitingApproval)
        #expect(h.store.snapshot.steps[run.id]![1].deadline == h.now.adding(.seconds(3600)))
        #expect(try h.claim("worker") == nil, "publish cannot be dispatched before the gate passes")
        let pending = try h.store.readRuns { reader throws(StoreError) in try reader.pendingApprovals(namespace: nil) }
        #expect(pending.map(\.id) == ["review"])
        try h.operations.decide(run: run.id, step: "review", approve: true, by: "bob", reason: "looks good", now: h.now)
        let publish = try #require(try h.claim("worker"))
        #expect(publish.dependencies.compactRendered() == #"{"review":{"approved":true,"by":"bob","reason":"looks good"}}"#)
        try h.complete(publish)
        #expect(h.run(run).phase == .succeeded)
        #expect(h.reasons(run) == ["Started", "ApprovalRequested", "Approved", "Succeeded"])
        // Deciding twice is refused.
        #expect {
            try h.operations.decide(run: run.id, step: "review", approve: false, by: "eve", reason: nil, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .conflict }
    }

    @Test func aDeniedGateFailsTheRunAndSkipsWhatFollows() throws {
        let h = RunHarness()
        let run = try h.start("gated")
        try h.complete(try #require(try h.claim("worker")))
        try h.operations.decide(run: run.id, step: "review", approve: false, by: "bob", reason: "off-brand", now: h.now)
        #expect(h.states(run) == ["draft": .succeeded, "review": .failed, "publish": .skipped])
        #expect(h.run(run).phase == .failed)
        #expect(h.run(run).error == "step \"review\": denied by bob: off-brand")
        #expect(h.reasons(run) == ["Started", "ApprovalRequested", "Denied", "Failed"])
    }

    @Test func approvalsTimeOutAsTheGateSays() throws {
        let h = RunHarness()
        let denied = try h.start("gated")
        try h.complete(try #require(try h.claim("worker")))
        h.advance(.seconds(3599))
        #expect(try h.sweep().isEmpty)
        h.advance(.seconds(1))
        #expect(try h.sweep().map(\.reason) == ["Denied", "Failed"])
        #expect(h.run(denied).error == "step \"review\": approval timed out after 1h")

        let approved = try h.start("lenient")
        #expect(h.states(approved)["auto"] == .waitingApproval)
        h.advance(.seconds(600))
        #expect(try h.sweep().map(\.reason) == ["Approved"])
        #expect(h.states(approved)["auto"] == .succeeded)
    }

    @Test func unknownGatesAndStepsAreNamed() throws {
        let h = RunHarness()
        let run = try h.start("gated")
        #expect {
            try h.operations.decide(run: run.id, step: "reveiw", approve: true, by: "bob", reason: nil, now: h.now)
        } throws: { error in
            let error = error as? RunError
            return error?.kind == .notFound && error?.message.contains("did you mean \"review\"?") == true
        }
        #expect {
            try h.operations.decide(run: run.id, step: "draft", approve: true, by: "bob", reason: nil, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .invalid }
    }

    @Test func cancellingStopsEveryOpenStep() throws {
        let h = RunHarness()
        let run = try h.start("fan")
        try h.complete(try #require(try h.claim("worker")))
        let running = try #require(try h.claim("worker"))
        let cancelled = try h.operations.cancel(run: run.id, by: "alice", reason: "wrong topic", now: h.now)
        #expect(cancelled.phase == .cancelled && cancelled.error == "cancelled by alice: wrong topic")
        #expect(h.states(run) == ["split": .succeeded, "x": .cancelled, "y": .cancelled, "z": .cancelled, "join": .cancelled])
        #expect(try h.claim("worker") == nil)
        #expect {
            try h.complete(running)
        } throws: { ($0 as? RunError)?.message.contains("the run cancelled") == true }
        #expect {
            try h.operations.cancel(run: run.id, by: "alice", reason: nil, now: h.now)
        } throws: { ($0 as? RunError)?.kind == .conflict }
    }

    @Test func continueOnFailureLetsDependantsRunWithoutTheOutput() throws {
        let h = RunHarness()
        let run = try h.start("lenient")
        try h.fail(try #require(try h.claim("worker")), "flaked")
        #expect(h.states(run)["optional"] == .deadLetter)
        #expect(h.run(run).phase == .running)
        try h.operations.decide(run: run.id, step: "auto", approve: true, by: "bob", reason: nil, now: h.now)
        let last = try #require(try h.claim("worker"))
        #expect(member(last.dependencies, "optional").map { if case .null = $0 { true } else { false } } == true)
        try h.complete(last)
        #expect(h.run(run).phase == .succeeded)
    }

    @Test func inputsAreCheckedAndDefaulted() throws {
        let h = RunHarness()
        #expect {
            try h.start("pipeline")
        } throws: {
            ($0 as? RunError)?.message
                == #"workflow "pipeline" needs input "topic" (required, no default); give it with --input NAME=VALUE"#
        }
        #expect {
            try h.start("pipeline", [("topic", "x"), ("tonne", "y")])
        } throws: { ($0 as? RunError)?.message.contains(#"has no input "tonne" (did you mean "tone"?); it takes: topic, tone"#) == true }
        #expect {
            try h.start("pipline")
        } throws: { error in
            (error as? RunError)?.kind == .notFound && (error as? RunError)?.message.contains(#"did you mean "pipeline"?"#) == true
        }
        #expect(h.store.snapshot.runs.isEmpty, "a refused run writes nothing")
    }

    @Test func aWorkflowThatNoLongerPassesTheAuditDoesNotRun() throws {
        // The state drifted: the policy that allows the hand-off is gone.
        let resources = storedResources(runFleet).filter { $0.id.kind != "Policy" }
        let store = InMemoryRunStore(resources: resources)
        #expect {
            try RunOperations(store: store).start(
                .init(workflow: ResourceID(kind: "Workflow", name: "pipeline"), input: [("topic", "t")], by: "alice"),
                now: Timestamp(milliseconds: 0), random: 1)
        } throws: { error in
            let error = error as? RunError
            return error?.kind == .forbidden && error?.message.contains("does not pass the permission audit") == true
                && error?.message.contains("perm.handoff-denied") == true
        }
    }

    @Test func aRunKeepsThePlanItStartedWith() throws {
        let h = RunHarness()
        let run = try h.start("pipeline", [("topic", "t")])
        let plan = try h.store.readRuns { reader throws(StoreError) in try reader.plan(of: run.id) }
        #expect(plan.steps.map(\.id) == ["a", "b", "c"])
        #expect(plan.steps[1].inputs.count == 3 && plan.steps[1].dependencies == [0] && plan.steps[0].dependants == [1])
        // What the store keeps reads back the same.
        #expect(try RunPlan(json: plan.json) == plan)
    }

    @Test func aCronSlotRunsOnceAndTheFirstSlotSeenOnlyIfAfterTheApply() throws {
        let appliedAt = utc("2026-11-20T10:02")
        let h = RunHarness(runFleet, appliedAt: appliedAt)
        let workflow = ResourceID(kind: "Workflow", name: "lenient")
        let cron = "*/5 * * * *"
        // First seen at 10:03: the 10:00 slot came before the apply, so it is only recorded.
        #expect(try h.operations.fire(workflow, cron: cron, slot: utc("2026-11-20T10:00"), now: utc("2026-11-20T10:03"), random: 1) == nil)
        #expect(h.store.snapshot.runs.isEmpty)
        let fired = try h.operations.fire(workflow, cron: cron, slot: utc("2026-11-20T10:05"), now: utc("2026-11-20T10:05"), random: 2)
        let run = try #require(try fired?.get())
        #expect(run.trigger == .schedule(cron: cron, slot: utc("2026-11-20T10:05")))
        #expect(run.createdBy == "schedule")
        // The same slot again (a second controller, a restart) and an older one: nothing.
        #expect(try h.operations.fire(workflow, cron: cron, slot: utc("2026-11-20T10:05"), now: utc("2026-11-20T10:06"), random: 3) == nil)
        #expect(try h.operations.fire(workflow, cron: cron, slot: utc("2026-11-20T10:00"), now: utc("2026-11-20T10:06"), random: 4) == nil)
        #expect(h.store.snapshot.runs.count == 1)
        #expect(try h.operations.fire(workflow, cron: cron, slot: utc("2026-11-20T10:10"), now: utc("2026-11-20T10:10"), random: 5) != nil)
        #expect(h.store.snapshot.runs.count == 2)
    }

    @Test func aFirstSlotAfterTheApplyRunsAndAScheduleThatCannotStartIsReported() throws {
        let h = RunHarness(runFleet, appliedAt: utc("2026-11-20T09:58"))
        let lenient = ResourceID(kind: "Workflow", name: "lenient")
        #expect(
            try h.operations.fire(lenient, cron: "*/5 * * * *", slot: utc("2026-11-20T10:00"), now: utc("2026-11-20T10:03"), random: 1)
                != nil)
        // pipeline needs an input without a default: a scheduled run cannot start.
        let pipeline = ResourceID(kind: "Workflow", name: "pipeline")
        let outcome = try h.operations.fire(
            pipeline, cron: "0 * * * *", slot: utc("2026-11-20T10:00"), now: utc("2026-11-20T10:00"), random: 2)
        guard case .failure(let error)? = outcome else {
            Issue.record("expected a failure, got \(String(describing: outcome))")
            return
        }
        #expect(error.kind == .invalid)
        #expect(h.store.snapshot.events.last?.reason == "ScheduleFailed" && h.store.snapshot.events.last?.resource == pipeline)
        #expect(
            try h.operations.fire(pipeline, cron: "0 * * * *", slot: utc("2026-11-20T10:00"), now: utc("2026-11-20T10:01"), random: 3)
                == nil)
    }
}

/// How a run's attempts are reported from the rows stored and the steps.
@Suite struct ReportedAttemptsTests {
    let run = RunID("0000000000000")!
    let worker = ResourceID(kind: ResourceKind.agent.rawValue, name: "worker")

    func step(_ index: Int, _ id: String, _ state: StepState, attempt: Int, started: Int64?, ended: Int64? = nil, agent: Bool = true)
        -> StepRecord
    {
        StepRecord(
            run: run, index: index, id: id, agent: agent ? worker : nil, state: state, attempt: attempt,
            startedAt: started.map(Timestamp.init(milliseconds:)), endedAt: ended.map(Timestamp.init(milliseconds:)))
    }

    func row(_ id: String, _ attempt: Int, _ outcome: AttemptRecord.Outcome, started: Int64, ended: Int64? = nil, error: String? = nil)
        -> AttemptRecord
    {
        AttemptRecord(
            run: run, step: id, attempt: attempt, agent: worker, startedAt: Timestamp(milliseconds: started),
            endedAt: ended.map(Timestamp.init(milliseconds:)), outcome: outcome, error: error)
    }

    @Test func aStepsCurrentAttemptIsItsRowsWhileItRunsAndOnceItSucceeded() {
        let steps = [
            step(0, "done", .succeeded, attempt: 1, started: 10, ended: 20),
            step(1, "retried", .succeeded, attempt: 2, started: 20, ended: 50),
            step(2, "running", .running, attempt: 1, started: 30),
            step(3, "ready", .ready, attempt: 1, started: 30),
            step(4, "pending", .pending, attempt: 0, started: nil),
            step(5, "gate", .succeeded, attempt: 0, started: 40, ended: 45, agent: false),
            step(6, "old", .succeeded, attempt: 1, started: 5, ended: 60),
        ]
        let stored = [
            // Stored by an older orlctl at its claim: the step's success is what counts.
            row("old", 1, .running, started: 5),
            row("retried", 2, .running, started: 40),
            row("ready", 1, .failed, started: 30, ended: 35, error: "boom"),
            row("retried", 1, .timedOut, started: 20, ended: 30, error: "late"),
            row("gone", 1, .failed, started: 1, ended: 2),
        ]
        let reported = AttemptRecord.reported(stored: stored, steps: steps)
        #expect(
            reported == [
                row("done", 1, .succeeded, started: 10, ended: 20),
                row("retried", 1, .timedOut, started: 20, ended: 30, error: "late"),
                row("retried", 2, .succeeded, started: 40, ended: 50),
                row("running", 1, .running, started: 30),
                row("ready", 1, .failed, started: 30, ended: 35, error: "boom"),
                row("old", 1, .succeeded, started: 5, ended: 60),
            ])
    }
}
