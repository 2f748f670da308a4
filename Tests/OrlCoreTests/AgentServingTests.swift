import OrlCore
import OrlJSON
import Synchronization
import Testing

/// A fleet whose steps list tools: what decides which task a call serves and whether a
/// tool call is allowed.
let toolFleet = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models: [{name: small, pricing: {input: 0.1, output: 0.1}}]
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: search}
    spec: {type: http, http: {url: "http://127.0.0.1:1/search", credentialSecret: search-key}}
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: shell}
    spec: {type: command, command: {command: /bin/echo, args: [hi]}, timeout: 2s}
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: wipe-disk}
    spec: {type: command, command: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: worker}
    spec: {model: sim/small, tools: [search, shell], runtime: {command: /bin/true, workingDir: /srv/work}}
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
      allow: {models: ["sim/*"], tools: [search, shell], handoffs: [worker, reviewer]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: tooled}
    spec:
      steps:
        - {id: find, agent: worker, tools: [search]}
        - {id: run, agent: worker, tools: [shell]}
        - {id: check, agent: reviewer, dependsOn: [find, run]}
    """

@Suite struct AgentServingTests {
    static let run1 = RunID("1m7zpgk9g86za")!
    static let run2 = RunID("1m7zpgk9g86zb")!
    static let worker = ResourceID(kind: "Agent", name: "worker")

    @Test func aCallServesTheTaskItNamesOrTheOnlyOne() throws {
        let a = TaskID(run: Self.run1, step: "a", attempt: 1)
        let b = TaskID(run: Self.run2, step: "b", attempt: 2)
        #expect(TaskServing.choose([a], agent: Self.worker, run: nil, step: nil) == .success(a))
        #expect(TaskServing.choose([a, b], agent: Self.worker, run: Self.run2.rawValue, step: "b") == .success(b))
        #expect(TaskServing.choose([a, b], agent: Self.worker, run: Self.run1.rawValue, step: nil) == .success(a))
        #expect(TaskServing.choose([a, b], agent: Self.worker, run: nil, step: "b") == .success(b))

        let several = try #require(TaskServing.choose([a, b], agent: Self.worker, run: nil, step: nil).failure)
        #expect(several.kind == .invalid)
        #expect(several.message.contains("serves 2 tasks") && several.message.contains("x-orl-run and x-orl-step"))
        let none = try #require(TaskServing.choose([], agent: Self.worker, run: nil, step: nil).failure)
        #expect(none.kind == .forbidden && none.message == #"agent "worker" is serving no task: it serves no task now"#)
        let other = try #require(TaskServing.choose([a], agent: Self.worker, run: Self.run2.rawValue, step: "b").failure)
        #expect(other.kind == .forbidden)
        #expect(other.message == #"agent "worker" is not serving step "b" of run 1m7zpgk9g86zb: it serves 1m7zpgk9g86za/a/1"#)
    }

    @Test func tasksInFlightLapseWithTheirLease() {
        let a = TaskID(run: Self.run1, step: "a", attempt: 1)
        let b = TaskID(run: Self.run1, step: "b", attempt: 1)
        let t0 = Timestamp(milliseconds: 1_000_000)
        var tasks = TasksInFlight()
        tasks.hold(a, agent: Self.worker, until: t0.adding(.seconds(10)))
        tasks.hold(b, agent: Self.worker, until: t0.adding(.seconds(2)))
        #expect(tasks.tasks(of: Self.worker, at: t0) == [a, b])
        #expect(tasks.tasks(of: Self.worker, at: t0.adding(.seconds(3))) == [a], "b's lease ran out")
        tasks.hold(b, agent: Self.worker, until: t0.adding(.seconds(20)))
        #expect(tasks.tasks(of: Self.worker, at: t0.adding(.seconds(3))) == [a, b], "a heartbeat renews it")
        tasks.release(a, agent: Self.worker)
        #expect(tasks.tasks(of: Self.worker, at: t0) == [b])
        #expect(tasks.tasks(of: ResourceID(kind: "Agent", name: "reviewer"), at: t0).isEmpty)

        let running = StepRecord(
            run: Self.run2, index: 0, id: "c", agent: Self.worker, state: .running, attempt: 3, leaseExpiresAt: t0.adding(.seconds(5)))
        let restored = TasksInFlight([running])
        #expect(restored.tasks(of: Self.worker, at: t0) == [TaskID(run: Self.run2, step: "c", attempt: 3)])
    }

    @Test func aToolCallNeedsARunningTaskWhoseStepListsTheTool() throws {
        let h = RunHarness(toolFleet)
        let denied = #expect(throws: RunError.self) { try h.operations.toolGrant("search", agent: Self.worker, run: nil, step: nil) }
        #expect(denied?.kind == .forbidden)
        #expect(denied?.message.contains("is serving no task") == true)

        let run = try h.start("tooled")
        let first = try #require(try h.claim("worker"))
        let grant = try h.operations.toolGrant(first.tools[0], agent: Self.worker, run: nil, step: nil)
        #expect(grant.task == first.id && grant.idempotencyKey == "\(run.id)/\(first.id.step)")
        let wrong = first.id.step == "find" ? "shell" : "search"
        let refused = #expect(throws: RunError.self) { try h.operations.toolGrant(wrong, agent: Self.worker, run: nil, step: nil) }
        #expect(refused?.kind == .forbidden)
        #expect(refused?.message.hasSuffix(#"does not list tool "\#(wrong)" (it lists: \#(first.tools[0]))"#) == true)

        // Two tasks in flight: the call must say which.
        let second = try #require(try h.claim("worker"))
        let ambiguous = #expect(throws: RunError.self) { try h.operations.toolGrant("shell", agent: Self.worker, run: nil, step: nil) }
        #expect(ambiguous?.kind == .invalid)
        #expect(try h.operations.toolGrant("shell", agent: Self.worker, run: run.id.rawValue, step: "run").task.step == "run")

        // Once answered, the task no longer grants anything.
        try h.complete(first)
        try h.complete(second)
        #expect(throws: RunError.self) { try h.operations.toolGrant("shell", agent: Self.worker, run: run.id.rawValue, step: "run") }
        let reviewer = try #require(try h.claim("reviewer"))
        let none = #expect(throws: RunError.self) {
            try h.operations.toolGrant("search", agent: reviewer.agent, run: nil, step: nil)
        }
        #expect(none?.message.contains("it lists no tools") == true)
    }

    @Test func writesTellWhichAgentsHaveAStepReady() throws {
        let h = RunHarness(runFleet)
        let told = Mutex<[Set<String>]>([])
        let operations = RunOperations(store: h.store) { agents in told.withLock { $0.append(Set(agents.map(\.name))) } }
        var random: UInt32 = 0
        func start(_ workflow: String, _ input: [(name: String, value: String)] = []) throws {
            random += 1
            _ = try operations.start(
                .init(workflow: ResourceID(kind: "Workflow", name: workflow), input: input, by: "t"), now: h.now, random: random)
        }
        try start("pipeline", [("topic", "x")])
        #expect(told.withLock { $0 } == [["worker"]])
        let a = try #require(try operations.claim(agent: Self.worker, now: h.now))
        #expect(told.withLock { $0 }.count == 1, "a claim readies nothing")
        try operations.complete(a.id, agent: Self.worker, output: try JSONParser.parse("{}", file: "t"), now: h.now)
        #expect(told.withLock { $0.last } == ["reviewer"])
        let b = try #require(try operations.claim(agent: ResourceID(kind: "Agent", name: "reviewer"), now: h.now))
        try operations.fail(b.id, agent: b.agent, error: "no", retry: false, now: h.now, random: 0)
        #expect(told.withLock { $0 }.count == 2, "a dead letter readies nothing")

        // A retried step is Ready again (after its backoff): its agent is told.
        try start("flaky")
        let attempt = try #require(try operations.claim(agent: Self.worker, now: h.now))
        try operations.fail(attempt.id, agent: Self.worker, error: "again", now: h.now, random: 0)
        #expect(told.withLock { $0.last } == ["worker"])
    }

    @Test func aCallersToolsAreThoseItsPoliciesAllowNow() throws {
        let fleet = validate(toolFleet).fleet
        let table = CallerTable(fleet: fleet, tokens: [Self.worker: AgentToken.digest("t")])
        let caller = try #require(table.caller(token: "t"))
        #expect(caller.tools.keys.sorted() == ["search", "shell"])
        #expect(caller.workingDir == "/srv/work")
        #expect(try caller.tool("shell").spec.command?.command == "/bin/echo")
        let denied = #expect(throws: GatewayError.self) { try caller.tool("wipe-disk") }
        #expect(denied?.status == 403 && denied?.code == "tool_not_allowed")
        #expect(denied?.message.contains("it may use: search, shell") == true)
        let missing = #expect(throws: GatewayError.self) { try caller.tool("serch") }
        #expect(missing?.status == 404 && missing?.code == "tool_not_found")
        #expect(missing?.message.contains(#"did you mean "search"?"#) == true)

        #expect(GatewayError(RunError(.conflict, "x")).status == 409)
        #expect(GatewayError(RunError(.forbidden, "x")).status == 403)
        #expect(GatewayError(RunError(.notFound, "x")).status == 404)
        #expect(GatewayError(RunError(.invalid, "x")).status == 400)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
