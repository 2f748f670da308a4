import Foundation
import OrlCore
import OrlJSON
import Testing

/// A fleet with one workflow per bounded pattern: a support router (billing, technical,
/// human), a writer/reviewer loop capped at 3 rounds, a fallback, and a loop inside
/// nothing else. `PATTERN_EDIT` markers are replaced by the audit cases.
let patternFleet = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models: [{name: small, pricing: {input: 1, output: 1}}]
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: refund}
    spec: {type: command, command: {command: refund}, capabilities: [irreversible]}
    ---
    apiVersion: orl.dev/v1
    kind: Tool
    metadata: {name: crm}
    spec: {type: http, http: {url: "https://crm.example.com"}, dataClasses: [pii]}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: triage, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: billing, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}, tools: [refund, crm]}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: tech, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: writer, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: reviewer, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: flaky, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: steady, labels: {team: t}}
    spec: {model: sim/small, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: team}
    spec:
      appliesTo: {selector: {matchLabels: {team: t}}}
      allow:
        models: ["sim/*"]
        handoffs: [triage, billing, tech, writer, reviewer, steady]
        dataClasses: [pii]
      requireApproval: {tools: [refund]}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: billing}
    spec:
      appliesTo: {agents: [billing]}
      allow: {tools: [refund, crm]}
    ---
    apiVersion: orl.dev/v1
    kind: Budget
    metadata: {name: team}
    spec:
      appliesTo: {selector: {matchLabels: {team: t}}}
      limits: [{window: day, tokens: 10000}]
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: support}
    spec:
      inputs: [{name: ticket, required: true}]
      steps:
        - id: classify
          agent: triage
          inputs: {ticket: {input: ticket}}
          route:
            key: category
            branches:
              billing: [check]
              technical: [debug]
              human: [escalate]
            default: human
        - {id: check, agent: billing, tools: [crm]}
        - id: approve-refund
          dependsOn: [check]
          approval: {message: Refund?}
        - {id: refund, agent: billing, dependsOn: [approve-refund], tools: [refund]}
        - {id: debug, agent: tech}
        - id: escalate
          approval: {message: Take this ticket?}
        - {id: close, agent: triage, dependsOn: [refund, debug, escalate]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: revise}
    spec:
      steps:
        - {id: brief, agent: writer}
        - id: write
          agent: writer
          dependsOn: [brief]
          maxTokens: 1000
          inputs: {feedback: {step: review}}
        - id: review
          agent: reviewer
          dependsOn: [write]
          maxTokens: 1000
          loop: {from: write, maxRounds: 3, until: {key: approved, equals: true}}
        - {id: publish, agent: writer, dependsOn: [review], inputs: {final: {step: write}}}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: backup}
    spec:
      steps:
        - id: draft
          agent: flaky
          retry: {attempts: 2, backoff: 1s}
          fallback: [{agent: steady}]
        - {id: send, agent: steady, dependsOn: [draft], inputs: {text: {step: draft, key: text}}}
    """

@Suite struct PatternTests {
    // MARK: Expansion and audit

    @Test func thePatternFleetPassesTheAuditAndExpandsEveryBoundedConstruct() throws {
        let report = validate(patternFleet, strict: true)
        #expect(report.diagnostics.isEmpty, "\(report.diagnostics.map { "\($0.code): \($0.message)" })")
        let revise = try #require(report.fleet.resources(of: .workflow).first { $0.metadata.name == "revise" }?.workflow)
        #expect(revise.declaredCount == 4)
        #expect(
            revise.steps.map(\.id.value) == ["brief", "write", "review", "publish", "write~r2", "review~r2", "write~r3", "review~r3"])
        let write2 = try #require(revise.steps.first { $0.id.value == "write~r2" })
        #expect(write2.dependsOn.map(\.value) == ["brief", "review"], "round 2 starts after round 1's review")
        guard case .stepOutput(let source, _) = write2.inputs[0].source else {
            Issue.record("feedback is not a step input")
            return
        }
        #expect(source.value == "review", "round 2 reads round 1's review")
        guard case .literal = revise.steps[1].inputs[0].source else {
            Issue.record("round 1 has no earlier review")
            return
        }
        let publish = revise.steps[3]
        #expect(Set(publish.dependsOn.map(\.value)) == ["review", "review~r2", "review~r3", "write~r2", "write~r3"])

        let backup = try #require(report.fleet.resources(of: .workflow).first { $0.metadata.name == "backup" }?.workflow)
        #expect(backup.steps.map(\.id.value) == ["draft", "send", "draft~fallback1"])
        #expect(backup.steps[1].dependsOn.map(\.value) == ["draft", "draft~fallback1"])
        #expect(backup.steps[2].agent?.value == "steady" && backup.steps[2].outputKey == "draft")
    }

    /// A step keeps its patterns and provenance out of line (`Step.patterns`): a step
    /// without them carries none, a copy shares them, and a change to a copy is the
    /// copy's alone.
    @Test func aStepsPatternsAreItsOwnAcrossCopiesAndChanges() throws {
        let report = validate(patternFleet, strict: true)
        let workflows = report.fleet.resources(of: .workflow).compactMap(\.workflow)
        let steps = workflows.flatMap(\.steps)
        let classify = try #require(steps.first { $0.id.value == "classify" })
        #expect(classify.route?.branches.map(\.value) == ["billing", "technical", "human"])
        #expect(classify.loop == nil && classify.fallback.isEmpty && classify.generated == nil)
        let draft = try #require(steps.first { $0.id.value == "draft" })
        #expect(draft.fallback.map(\.agent.value) == ["steady"] && draft.route == nil)
        let takeover = try #require(steps.first { $0.id.value == "draft~fallback1" })
        #expect(takeover.fallback.isEmpty && takeover.generated?.fallback == 1 && takeover.generated?.takesOverFrom == "draft")
        let review2 = try #require(steps.first { $0.id.value == "review~r2" })
        #expect(review2.generated?.round == 2 && review2.generated?.loop == "review" && review2.loop != nil)

        var copy = classify
        copy.route = nil
        #expect(classify.route != nil, "the original keeps its route")
        #expect(copy.route == nil && copy != classify)
        copy.publish = [Located("news", at: classify.location)]
        #expect(copy.publish.map(\.value) == ["news"] && classify.publish.isEmpty)
        copy.publish = []
        copy.route = classify.route
        #expect(copy == classify, "setting back what was there gives the same step")

        let plain = try #require(steps.first { $0.id.value == "check" })
        var touched = plain
        touched.generated = takeover.generated
        #expect(touched.generated?.fallback == 1 && touched != plain)
        touched.generated = nil
        #expect(touched == plain && touched.generated == nil && touched.delegate == nil && touched.handoff == nil)
    }

    static func audit(_ edits: [(String, String)]) throws -> [Diagnostic] {
        var yaml = patternFleet
        for (old, new) in edits {
            try #require(yaml.contains(old), "the fixture has no \(old)")
            yaml = yaml.replacingOccurrences(of: old, with: new)
        }
        return validate(yaml).diagnostics
    }

    /// A branch that reaches the irreversible refund without the gate is flagged, with
    /// the route it is on; its twin (the fixture, gated) is not.
    @Test func anUngatedBranchToAnIrreversibleToolIsFlaggedWithItsRoute() throws {
        let diagnostics = try Self.audit([
            (
                "- {id: refund, agent: billing, dependsOn: [approve-refund], tools: [refund]}",
                "- {id: refund, agent: billing, dependsOn: [check], tools: [refund]}"
            )
        ])
        let missing = diagnostics.filter { $0.code == .permApprovalMissing }
        #expect(missing.count == 1, "\(diagnostics.map(\.message))")
        #expect(missing.first?.message.contains(#""classify" → "check" → "refund""#) == true, "\(missing.map(\.message))")
        #expect(missing.first?.notes.contains { $0.message == #"step "refund" runs via route billing of step "classify""# } == true)
    }

    @Test func aFallbackAgentIsCheckedLikeTheStepsOwn() throws {
        // steady may not be handed the task by flaky; and a fallback to an unknown agent is a reference error.
        let denied = try Self.audit([
            ("handoffs: [triage, billing, tech, writer, reviewer, steady]", "handoffs: [triage, billing, tech, writer, reviewer]")
        ])
        let handoff = denied.filter { $0.code == .permHandoffDenied }
        #expect(handoff.contains { $0.message.contains(#"agent "flaky" may not hand off to agent "steady""#) }, "\(denied.map(\.message))")
        #expect(handoff.allSatisfy { $0.path?.description.hasPrefix("spec.steps[") == true })
        #expect(
            handoff.contains { $0.path?.description == "spec.steps[0].fallback[0].agent" }, "\(handoff.map { $0.path?.description ?? "" })")
        let unknown = try Self.audit([("fallback: [{agent: steady}]", "fallback: [{agent: stedy}]")])
        #expect(unknown.contains { $0.code == .refMissing && $0.message.contains("stedy") }, "\(unknown.map(\.message))")
    }

    /// 3 rounds × 2 steps × 1000 tokens fit a 10000-token day; 5 rounds (10000 + brief) do not.
    @Test func aLoopBoundThatMakesTheBudgetInfeasibleIsFlaggedAndItsTwinIsNot() throws {
        #expect(try Self.audit([]).filter { $0.code == .budgetInfeasible }.isEmpty)
        let over = try Self.audit([("loop: {from: write, maxRounds: 3", "loop: {from: write, maxRounds: 6")])
            .filter { $0.code == .budgetInfeasible }
        #expect(over.count == 1)
        #expect(over.first?.message.contains("12000 tokens against the 10000 per day") == true, "\(over.map(\.message))")
        #expect(over.first?.notes.contains { $0.message.contains(#"6 rounds of loop "review""#) } == true)
    }

    @Test func malformedPatternsAreValidationErrors() throws {
        let from = try Self.audit([("loop: {from: write, maxRounds: 3", "loop: {from: publish, maxRounds: 3")])
        #expect(from.contains { $0.code == .dagPatternInvalid && $0.message.contains("not upstream") }, "\(from.map(\.message))")
        let unbounded = try Self.audit([("loop: {from: write, maxRounds: 3, ", "loop: {from: write, ")])
        #expect(unbounded.contains { $0.code == .schemaInvalid }, "a loop without maxRounds: \(unbounded.map(\.message))")
        let branch = try Self.audit([("technical: [debug]", "technical: [debgu]")])
        #expect(branch.contains { $0.code == .dagPatternInvalid && $0.message.contains("did you mean") }, "\(branch.map(\.message))")
        let fallback = try Self.audit([("default: human", "default: people")])
        #expect(fallback.contains { $0.code == .dagPatternInvalid && $0.message.contains("not one of its branches") })
    }

    // MARK: Run time

    @Test func aRouterRunsTheBranchItsResultSelectsAndSkipsTheOthers() throws {
        let h = RunHarness(patternFleet)
        let run = try h.start("support", [("ticket", "my card was charged twice")])
        let classify = try #require(try h.claim("triage"))
        try h.complete(classify, #"{"category": "billing"}"#)
        var states = h.states(run)
        #expect(states["check"] == .ready && states["debug"] == .skipped && states["escalate"] == .skipped)
        #expect(states["close"] == .pending)
        let record = h.store.snapshot.steps[run.id]!.first { $0.id == "classify" }!
        #expect(record.reason == #"route billing (category = "billing")"#)
        #expect(h.reasons(run).contains("Routed"))
        try h.complete(try #require(try h.claim("billing")))
        _ = try h.operations.decide(run: run.id, step: "approve-refund", approve: true, by: "bob", reason: nil, now: h.now)
        try h.complete(try #require(try h.claim("billing")))
        try h.complete(try #require(try h.claim("triage")))
        states = h.states(run)
        #expect(states["close"] == .succeeded && h.run(run).phase == .succeeded, "\(states)")
    }

    @Test func anUnmatchedRouteTakesTheDefaultOrFailsTheAttemptClearly() throws {
        let h = RunHarness(patternFleet)
        let run = try h.start("support", [("ticket", "?")])
        try h.complete(try #require(try h.claim("triage")), #"{"category": "weather"}"#)
        #expect(h.states(run)["escalate"] == .waitingApproval && h.states(run)["check"] == .skipped)
        #expect(h.store.snapshot.steps[run.id]!.first { $0.id == "classify" }!.reason?.contains("matches no branch; the default") == true)

        let strict = try Self.strictRouter()
        let run2 = try strict.start("support", [("ticket", "?")])
        let record = try strict.complete(try #require(try strict.claim("triage")), #"{"category": "weather"}"#)
        #expect(record.state == .deadLetter)
        #expect(
            record.error?.contains(
                #"category = "weather" matches none of its branches ("billing", "human", "technical") and it has no default"#)
                == true, "\(record.error ?? "")")
        #expect(strict.run(run2).phase == .failed)
    }

    static func strictRouter() throws -> RunHarness {
        RunHarness(patternFleet.replacingOccurrences(of: "default: human", with: ""))
    }

    @Test func aRevisionLoopEndsWhenTheReviewerSaysSoOrAtItsBound() throws {
        let h = RunHarness(patternFleet)
        let run = try h.start("revise")
        try h.complete(try #require(try h.claim("writer")))  // brief
        let write1 = try #require(try h.claim("writer"))
        #expect(write1.id.step == "write" && write1.round == 1 && write1.inputs.compactRendered() == #"{"feedback":null}"#)
        try h.complete(write1, #"{"text": "v1"}"#)
        try h.complete(try #require(try h.claim("reviewer")), #"{"approved": false, "note": "shorter"}"#)
        let write2 = try #require(try h.claim("writer"))
        #expect(write2.id.step == "write~r2" && write2.round == 2)
        #expect(write2.inputs.compactRendered() == #"{"feedback":{"approved":false,"note":"shorter"}}"#)
        try h.complete(write2, #"{"text": "v2"}"#)
        try h.complete(try #require(try h.claim("reviewer")), #"{"approved": true}"#)
        let states = h.states(run)
        #expect(states["write~r3"] == .skipped && states["review~r3"] == .skipped, "\(states)")
        let publish = try #require(try h.claim("writer"))
        #expect(publish.id.step == "publish")
        #expect(publish.inputs.compactRendered() == #"{"final":{"text":"v2"}}"#, "the last round's draft")
        #expect(publish.dependencies.compactRendered() == #"{"review":{"approved":true},"write":{"text":"v2"}}"#)
        #expect(h.reasons(run).contains("LoopEnded"))

        // Never approved: three rounds, then on.
        let bounded = try h.start("revise")
        var rounds = 0
        while let task = try h.claim("writer") ?? h.claim("reviewer") {
            if task.id.step.hasPrefix("review") { rounds += 1 }
            try h.complete(task, #"{"approved": false}"#)
        }
        #expect(rounds == 3 && h.run(bounded).phase == .succeeded)
        let last = h.store.snapshot.steps[bounded.id]!.first { $0.id == "review~r3" }!
        #expect(last.reason == "loop ended at its bound, round 3 of 3: approved = false", "\(last.reason ?? "")")
    }

    @Test func aFallbackTakesOverWhenAStepExhaustsItsRetriesAndIsSkippedOtherwise() throws {
        let h = RunHarness(patternFleet)
        let run = try h.start("backup")
        try h.fail(try #require(try h.claim("flaky")))
        h.advance(.seconds(5))
        let last = try h.fail(try #require(try h.claim("flaky")))
        #expect(last.state == .deadLetter && h.run(run).phase == .running)
        #expect(h.reasons(run).contains("FallbackTakesOver"))
        let takeover = try #require(try h.claim("steady"))
        #expect(takeover.id.step == "draft~fallback1")
        try h.complete(takeover, #"{"text": "from steady"}"#)
        let send = try #require(try h.claim("steady"))
        #expect(send.inputs.compactRendered() == #"{"text":"from steady"}"#)
        try h.complete(send)
        #expect(h.run(run).phase == .succeeded)

        let fine = try h.start("backup")
        try h.complete(try #require(try h.claim("flaky")), #"{"text": "fine"}"#)
        #expect(h.states(fine)["draft~fallback1"] == .skipped)
        #expect(try h.claim("steady")?.id.step == "send")
    }

    @Test func thePlanOfAPatternRunSurvivesItsStoredForm() throws {
        let report = validate(patternFleet)
        for name in ["support", "revise", "backup"] {
            let workflow = try #require(report.fleet.resources(of: .workflow).first { $0.metadata.name == name })
            let plan = try RunPlan.compile(workflow, generation: 1, in: report.fleet).get()
            #expect(try RunPlan(json: plan.json) == plan, "\(name)")
        }
    }
}
