import Foundation
import OrlCore
import OrlJSON
import Testing

/// A planner with a pool of three workers (one of them with a tool that needs approval
/// and carries pii), bounded to 3 sub-tasks a round, 2 at a time, 2 rounds.
let delegationFleet = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models: [{name: small, pricing: {input: 1, output: 1}}]
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: search}
    spec: {type: http, http: {url: "https://search.example.com"}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: planner, labels: {team: r, role: planner}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: web, labels: {team: r, role: worker}}
    spec: {model: sim/small, runtime: {command: /bin/true}, tools: [search]}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: papers, labels: {team: r, role: worker}}
    spec: {model: sim/small, runtime: {command: /bin/true}, tools: [search]}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: stats, labels: {team: r, role: worker}}
    spec: {model: sim/small, runtime: {command: /bin/true}, tools: [search]}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: team}
    spec:
      appliesTo: {selector: {matchLabels: {team: r}}}
      allow: {models: ["sim/*"], tools: [search]}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: planner}
    spec:
      appliesTo: {selector: {matchLabels: {role: planner}}}
      allow: {handoffs: [web, papers, stats]}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: workers}
    spec:
      appliesTo: {selector: {matchLabels: {role: worker}}}
      allow: {handoffs: [planner]}
    ---
    apiVersion: orl.dev/v1
    kind: Budget
    metadata: {name: team}
    spec:
      appliesTo: {selector: {matchLabels: {team: r}}}
      limits: [{window: day, tokens: 10000}]
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: research}
    spec:
      steps:
        - id: plan
          agent: planner
          maxTokens: 500
          delegate:
            workers: [web, papers, stats]
            maxTasks: 3
            maxConcurrent: 2
            maxRounds: 2
            tools: [search]
            maxTokens: 1000
        - {id: report, agent: planner, dependsOn: [plan], maxTokens: 500}
    """

@Suite struct DelegationTests {
    static func audit(_ edits: [(String, String)]) throws -> [Diagnostic] {
        var yaml = delegationFleet
        for (old, new) in edits {
            try #require(yaml.contains(old), "the fixture has no \(old)")
            yaml = yaml.replacingOccurrences(of: old, with: new)
        }
        return validate(yaml).diagnostics
    }

    @Test func aPlannerExpandsIntoItsRoundsAndSlotsAndPassesTheAudit() throws {
        let report = validate(delegationFleet, strict: true)
        #expect(report.diagnostics.isEmpty, "\(report.diagnostics.map { "\($0.code): \($0.message)" })")
        let spec = try #require(report.fleet.resources(of: .workflow).first?.workflow)
        #expect(
            spec.steps.map(\.id.value) == [
                "plan", "report", "plan~task1", "plan~task2", "plan~task3", "plan~r2", "plan~r2~task1", "plan~r2~task2", "plan~r2~task3",
            ])
        let round2 = try #require(spec.steps.first { $0.id.value == "plan~r2" })
        #expect(round2.dependsOn.map(\.value) == ["plan~task1", "plan~task2", "plan~task3"], "round 2 sees round 1's results")
        #expect(round2.outputKey == "plan")
        let slot = try #require(spec.steps.first { $0.id.value == "plan~r2~task2" })
        #expect(slot.generated?.pool.map(\.value) == ["web", "papers", "stats"] && slot.maxTokens == 1000)
        #expect(slot.provenance == #"sub-task 2 of round 2 delegated by "plan""#)
        #expect(spec.steps[1].dependsOn.count == 1 + 1 + 6, "report waits for every round and sub-task")
    }

    /// Every worker of the pool is checked in every slot: one the planner may not hand
    /// off to is flagged, at its entry in the pool; the fixture (all allowed) is not.
    @Test func aWorkerThePlannerMayNotHandOffToIsFlagged() throws {
        let diagnostics = try Self.audit([("allow: {handoffs: [web, papers, stats]}", "allow: {handoffs: [web, papers]}")])
        let denied = diagnostics.filter { $0.code == .permHandoffDenied }
        #expect(denied.count == 1, "one report for all slots and rounds: \(denied.map(\.message))")
        #expect(denied.first?.message.contains(#"agent "planner" may not hand off to agent "stats""#) == true)
        #expect(denied.first?.path?.description == "spec.steps[0].delegate", "\(denied.first?.path?.description ?? "")")
        let at = try #require(position(of: "stats]", in: delegationFleet, after: "workers: [web"))
        #expect(denied.first?.location?.line == at.line && denied.first?.location?.column == at.column)
        #expect(denied.first?.notes.contains { $0.message.contains("at most 3 sub-tasks a round, 2 rounds") } == true)

        // And a worker's result must be allowed back to the planner.
        let back = try Self.audit([("allow: {handoffs: [planner]}", "allow: {handoffs: []}")]).filter { $0.code == .permHandoffDenied }
        #expect(back.contains { $0.message.contains(#"agent "web" may not hand off to agent "planner""#) }, "\(back.map(\.message))")
    }

    @Test func aWorkerThatMayNotUseTheSubTasksToolsIsFlagged() throws {
        let diagnostics = try Self.audit([
            (
                "{name: stats, labels: {team: r, role: worker}}\nspec: {model: sim/small, runtime: {command: /bin/true}, tools: [search]}",
                "{name: stats, labels: {team: r, role: worker}}\nspec: {model: sim/small, runtime: {command: /bin/true}}"
            )
        ])
        let undeclared = diagnostics.filter { $0.code == .permToolUndeclared }
        #expect(undeclared.count == 1 && undeclared.first?.message.contains(#"agent "stats" does not declare"#) == true)
        #expect(undeclared.first?.path?.description == "spec.steps[0].delegate.tools[0]", "\(undeclared.first?.path?.description ?? "")")
    }

    /// 2 rounds × 3 sub-tasks × 1000 + 3 × 500 fit 10000 tokens; 5 sub-tasks a round do not.
    @Test func aBoundThatMakesTheBudgetInfeasibleIsFlaggedAndItsTwinIsNot() throws {
        #expect(try Self.audit([]).filter { $0.code == .budgetInfeasible }.isEmpty)
        let over = try Self.audit([("maxTasks: 3", "maxTasks: 5")]).filter { $0.code == .budgetInfeasible }
        #expect(over.count == 1)
        #expect(over.first?.message.contains("11500 tokens against the 10000 per day") == true, "\(over.map(\.message))")
        #expect(over.first?.notes.contains { $0.message.contains(#"5 sub-tasks × 2 rounds delegated by "plan""#) } == true)
    }

    @Test func malformedDelegationsAreValidationErrors() throws {
        let unknown = try Self.audit([("workers: [web, papers, stats]", "workers: [web, paper, stats]")])
        #expect(unknown.contains { $0.code == .refMissing && $0.message.contains("paper") }, "\(unknown.map(\.message))")
        let twice = try Self.audit([("workers: [web, papers, stats]", "workers: [web, web, stats]")])
        #expect(twice.contains { $0.code == .dagPatternInvalid && $0.message.contains("listed twice") })
        let wide = try Self.audit([("maxConcurrent: 2", "maxConcurrent: 4")])
        #expect(wide.contains { $0.code == .dagPatternInvalid && $0.message.contains("more than its maxTasks") })
        let unbounded = try Self.audit([("maxTasks: 3\n        ", "")])
        #expect(unbounded.contains { $0.code == .schemaInvalid }, "a pool without maxTasks: \(unbounded.map(\.message))")
        let both = try Self.audit([("delegate:\n", "fallback: [{agent: web}]\n      delegate:\n")])
        #expect(
            both.contains { $0.code == .dagPatternInvalid && $0.message.contains("both delegate and fallback") }, "\(both.map(\.message))")
    }

    // MARK: Run time

    static let threeTasks =
        #"{"tasks": [{"agent": "web", "task": "news"}, {"agent": "papers", "task": "survey"}, {"agent": "web", "task": "blogs"}]}"#

    @Test func thePlannersAnswerFillsTheSlotsWithinTheConcurrencyBound() throws {
        let h = RunHarness(delegationFleet)
        let run = try h.start("research")
        try h.complete(try #require(try h.claim("planner")), Self.threeTasks)
        var states = h.states(run)
        #expect(states["plan~task1"] == .ready && states["plan~task2"] == .ready, "\(states)")
        #expect(states["plan~task3"] == .pending, "the third waits for a place (maxConcurrent 2)")
        #expect(states["plan~r2"] == .pending && states["report"] == .pending)
        #expect(h.reasons(run).contains("Delegated"))
        #expect(try h.claim("stats") == nil, "stats was given nothing")

        let news = try #require(try h.claim("web"))
        #expect(news.id.step == "plan~task1" && news.inputs.compactRendered() == #"{"task":"news"}"#)
        #expect(news.tools == ["search"] && news.maxTokens == 1000)
        #expect(try h.claim("web") == nil, "blogs waits for a place")
        try h.complete(news, #"{"found": "otters are fast"}"#)
        let blogs = try #require(try h.claim("web"))
        #expect(blogs.id.step == "plan~task3" && blogs.inputs.compactRendered() == #"{"task":"blogs"}"#)
        try h.complete(blogs, #"{"found": "blogs agree"}"#)
        try h.complete(try #require(try h.claim("papers")), #"{"found": "a survey"}"#)

        // Round 2 sees the results, lists nothing: the delegation ends, the report runs.
        let round2 = try #require(try h.claim("planner"))
        #expect(round2.id.step == "plan~r2" && round2.round == 2)
        #expect(
            round2.dependencies.compactRendered()
                == #"{"plan~task1":{"found":"otters are fast"},"plan~task2":{"found":"a survey"},"plan~task3":{"found":"blogs agree"}}"#)
        try h.complete(round2, #"{"tasks": [], "summary": "enough"}"#)
        states = h.states(run)
        for k in 1...3 { #expect(states["plan~r2~task\(k)"] == .skipped) }
        #expect(h.reasons(run).contains("DelegationEnded"))
        let report = try #require(try h.claim("planner"))
        #expect(report.id.step == "report")
        #expect(
            report.dependencies.compactRendered()
                == #"{"plan":{"summary":"enough","tasks":[]},"plan~task1":{"found":"otters are fast"},"plan~task2":{"found":"a survey"},"plan~task3":{"found":"blogs agree"}}"#,
            "the empty slots are no result")
        try h.complete(report)
        #expect(h.run(run).phase == .succeeded)
        let slots = h.store.snapshot.steps[run.id]!
        #expect(slots.first { $0.id == "plan~task2" }?.agent?.name == "papers")
        #expect(slots.first { $0.id == "plan" }?.reason == #"delegated 3 sub-tasks in round 1 of 2: "web", "papers", "web""#)
    }

    @Test func aPlannerCannotReachBeyondItsPoolOrItsBound() throws {
        let h = RunHarness(delegationFleet)
        let outside = try h.start("research")
        let record = try h.complete(
            try #require(try h.claim("planner")), #"{"tasks": [{"agent": "web", "task": "a"}, {"agent": "mallory", "task": "b"}]}"#)
        #expect(record.state == .deadLetter && h.run(outside).phase == .failed)
        #expect(
            record.error?.contains(#"sub-task 2 names agent "mallory", which is not in its pool (web, papers, stats)"#) == true,
            "\(record.error ?? "")")
        #expect(h.reasons(outside).contains("DelegationRefused"))
        let web = try h.claim("web")
        #expect(h.states(outside)["plan~task1"] != .ready && web == nil, "nothing was delegated")

        let many = try h.start("research")
        let task = #"{"agent": "web", "task": "x"}"#
        let refused = try h.complete(try #require(try h.claim("planner")), #"{"tasks": [\#(task), \#(task), \#(task), \#(task)]}"#)
        #expect(refused.error?.contains("it lists 4 sub-tasks, more than maxTasks (3)") == true, "\(refused.error ?? "")")
        #expect(h.run(many).phase == .failed)
    }

    @Test func thePlanOfADelegationSurvivesItsStoredForm() throws {
        let report = validate(delegationFleet)
        let workflow = try #require(report.fleet.resources(of: .workflow).first)
        let plan = try RunPlan.compile(workflow, generation: 1, in: report.fleet).get()
        #expect(try RunPlan(json: plan.json) == plan)
        let planner = try #require(plan.steps.first { $0.id == "plan" }?.delegation)
        #expect(planner.slots.map { plan.steps[$0].id } == ["plan~task1", "plan~task2", "plan~task3"] && planner.maxConcurrent == 2)
    }
}
