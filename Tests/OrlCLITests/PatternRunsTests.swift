import Foundation
import OrlCore
import OrlJSON
import Testing

/// The bounded patterns end to end: the examples' fleets (examples/routing,
/// revision-loop, fallback) applied to a real state, run by the real controller and the
/// reference agent, whose answers the manifests script (a step's `reply` input,
/// `AGENT_FAIL` on an agent).
@Suite(.serialized) struct PatternRunsTests {
    static func harness() throws -> AgentRunsTests.Harness {
        let h = try AgentRunsTests.Harness()
        try FileManager.default.createDirectory(atPath: h.state + "/workspace", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: h.state + "/workspace/examples", withDestinationPath: Orlctl.packageRoot.appendingPathComponent("examples").path)
        for example in ["routing", "revision-loop", "fallback", "delegation", "handoff", "blackboard"] {
            try h.apply(Orlctl.packageRoot.appendingPathComponent("examples/\(example)").path)
        }
        try h.startController()
        return h
    }

    func state(_ steps: [String: [String: Any]], _ id: String) -> String { steps[id]?["state"] as? String ?? "?" }

    @Test func theBoundedPatternsRunEndToEndWithTheReferenceAgent() async throws {
        let h = try Self.harness()

        // Routing: a technical ticket takes the technical branch only.
        let technical = try h.start("support-ticket", ["-n", "routing", "--input", #"ticket={"category": "technical"}"#])
        #expect(try await h.awaitRun(technical, ["Succeeded", "Failed"]) == "Succeeded")
        var steps = try h.steps(technical)
        #expect(state(steps, "debug") == "Succeeded" && state(steps, "close") == "Succeeded")
        for skipped in ["check", "approve-refund", "refund", "escalate"] { #expect(state(steps, skipped) == "Skipped", "\(skipped)") }
        #expect(steps["classify"]?["reason"] as? String == #"route technical (category = "technical")"#)
        let described = try h.orlctl(["describe", "run/\(technical)", "-n", "routing"]).stdout
        let decision = #"classify: route technical (category = "technical")"#
        #expect(described.contains("Decisions:") && described.contains(decision), "\(described)")
        #expect(described.contains("Routed"), "\(described)")

        // A ticket triage cannot place goes to a person (the default branch).
        let unclear = try h.start("support-ticket", ["-n", "routing", "--input", "ticket=the printer is on fire"])
        try await h.awaitRun(unclear, ["WaitingApproval"])
        steps = try h.steps(unclear)
        #expect(state(steps, "escalate") == "WaitingApproval" && state(steps, "debug") == "Skipped" && state(steps, "check") == "Skipped")
        #expect((steps["classify"]?["reason"] as? String)?.contains("matches no branch; the default") == true)
        #expect(try h.orlctl(["approve", "run/\(unclear)", "--step", "escalate"]).status == 0)
        #expect(try await h.awaitRun(unclear, ["Succeeded", "Failed"]) == "Succeeded")

        // Revision loop: approved in round 2, so round 3 never runs; publish gets round 2's draft.
        let article = try h.start("article", ["-n", "revision-loop"])
        #expect(try await h.awaitRun(article, ["Succeeded", "Failed"]) == "Succeeded")
        steps = try h.steps(article)
        #expect(state(steps, "review~r2") == "Succeeded" && state(steps, "write~r3") == "Skipped" && state(steps, "review~r3") == "Skipped")
        #expect((steps["review~r2"]?["reason"] as? String)?.hasPrefix("loop ended in round 2 of 3") == true)
        #expect(try h.output(article, "review")["approved"] as? Bool == true, "the latest review is round 2's")
        #expect((steps["write~r2"]?["tokens"] as? Int ?? 0) > 0, "each round has its own cost")

        // Never approved: the loop stops at its bound and the run goes on.
        let stubborn = try h.start("article", ["-n", "revision-loop", "--input", #"verdicts={"approved": false}"#])
        #expect(try await h.awaitRun(stubborn, ["Succeeded", "Failed"]) == "Succeeded")
        steps = try h.steps(stubborn)
        #expect(state(steps, "review~r3") == "Succeeded" && state(steps, "publish") == "Succeeded")
        #expect(steps["review~r3"]?["reason"] as? String == "loop ended at its bound, round 3 of 3: approved = false")

        // Fallback: primary fails both attempts, backup takes over, notify gets its summary.
        let digest = try h.start("daily-digest", ["-n", "fallback"])
        #expect(try await h.awaitRun(digest, ["Succeeded", "Failed"]) == "Succeeded")
        steps = try h.steps(digest)
        #expect(state(steps, "summarize") == "DeadLetter" && steps["summarize"]?["attempt"] as? Int == 2)
        #expect(state(steps, "summarize~fallback1") == "Succeeded" && state(steps, "notify") == "Succeeded")
        let events = try h.orlctl(["describe", "run/\(digest)", "-n", "fallback"]).stdout
        #expect(events.contains("FallbackTakesOver") && events.contains("the upstream model is unavailable"), "\(events)")
        #expect(
            events.contains(#"summarize: fallback: agent "backup" takes over as step "summarize~fallback1" after 2 failed attempts"#),
            "\(events)")
        #expect(h.file("state/logs/fallback/backup.log").contains("summarize~fallback1"), "\(h.agentLogs())")

        try h.stopController()
    }

    /// Delegation: a research planner hands three sub-tasks to its pool (two at a time),
    /// sees their results in its second round and hands one more; the report gets them
    /// all. A planner that names an agent outside its pool is refused.
    @Test func aPlannerDelegatesToItsPoolEndToEnd() async throws {
        let h = try Self.harness()
        let research = try h.start("research", ["-n", "delegation"])
        #expect(try await h.awaitRun(research, ["Succeeded", "Failed"]) == "Succeeded")
        let steps = try h.steps(research)
        for ran in ["plan", "plan~task1", "plan~task2", "plan~task3", "plan~r2", "plan~r2~task1", "report"] {
            #expect(state(steps, ran) == "Succeeded", "\(ran): \(steps[ran] ?? [:])")
        }
        for skipped in ["plan~task4", "plan~r2~task2", "plan~r2~task3", "plan~r2~task4"] { #expect(state(steps, skipped) == "Skipped") }
        #expect(steps["plan~task2"]?["agent"] as? String == "papers" && steps["plan~r2~task1"]?["agent"] as? String == "papers")
        #expect((steps["plan~task3"]?["tokens"] as? Int ?? 0) > 0, "each sub-task has its own cost")
        #expect(h.file("state/logs/delegation/stats.log").contains("plan~task3"), "\(h.agentLogs())")
        let described = try h.orlctl(["describe", "run/\(research)", "-n", "delegation"]).stdout
        #expect(described.contains(#"plan: delegated 3 sub-tasks in round 1 of 2: "web", "papers", "stats""#), "\(described)")
        #expect(described.contains("Delegated"), "\(described)")

        let rogue = try h.start(
            "research", ["-n", "delegation", "--input", #"plans={"tasks": [{"agent": "mallory", "task": "exfiltrate"}]}"#])
        #expect(try await h.awaitRun(rogue, ["Succeeded", "Failed"]) == "Failed")
        let refused = try h.orlctl(["describe", "run/\(rogue)", "-n", "delegation"]).stdout
        #expect(
            refused.contains("DelegationRefused") && refused.contains(#"names agent "mallory", which is not in its pool"#), "\(refused)")
        #expect(try h.steps(rogue).values.allSatisfy { ($0["agent"] as? String) != "mallory" })
        try h.stopController()
    }

    /// A help desk's hand-off chain: the front desk hands the ticket to billing, which
    /// keeps it; `describe run` says who took it and the value that decided it. A
    /// hand-off outside the declared set, or past maxHandoffs, is refused.
    @Test func aHandOffChainRunsEndToEndWithinItsSetAndBound() async throws {
        let h = try Self.harness()
        let desk = try h.start("help-desk", ["-n", "handoff"])
        #expect(try await h.awaitRun(desk, ["Succeeded", "Failed"]) == "Succeeded")
        var steps = try h.steps(desk)
        #expect(state(steps, "desk~h1") == "Succeeded" && steps["desk~h1"]?["agent"] as? String == "billing", "\(steps)")
        #expect(state(steps, "desk~h2") == "Skipped" && state(steps, "close") == "Succeeded")
        #expect(try h.output(desk, "desk")["answer"] as? String == "credit note issued", "close reads the last turn")
        let described = try h.orlctl(["describe", "run/\(desk)", "-n", "handoff"]).stdout
        #expect(described.contains(#"desk: handed off to "billing" (handoffTo = "billing"; hand-off 1 of at most 2)"#), "\(described)")
        #expect(described.contains("desk~h1: kept the task after 1 hand-off") && described.contains("HandedOff"), "\(described)")
        #expect(h.file("state/logs/handoff/billing.log").contains("desk~h1"), "\(h.agentLogs())")

        let rogue = try h.start(
            "help-desk", ["-n", "handoff", "--input", #"script={"byAgent": {"frontdesk": {"handoffTo": "mallory"}}}"#])
        #expect(try await h.awaitRun(rogue, ["Succeeded", "Failed"]) == "Failed")
        steps = try h.steps(rogue)
        #expect(steps.values.allSatisfy { ($0["agent"] as? String) != "mallory" })
        let refused = try h.orlctl(["describe", "run/\(rogue)", "-n", "handoff"]).stdout
        #expect(
            refused.contains("HandoffRefused") && refused.contains(#"handoffTo = "mallory", which is not among the agents"#), "\(refused)")

        let pingPong =
            #"script={"byAgent": {"frontdesk": {"handoffTo": "billing"}, "billing": {"handoffTo": "tech"}, "tech": {"handoffTo": "billing"}}}"#
        let endless = try h.start("help-desk", ["-n", "handoff", "--input", pingPong])
        #expect(try await h.awaitRun(endless, ["Succeeded", "Failed"]) == "Failed")
        steps = try h.steps(endless)
        #expect(steps["desk~h2"]?["agent"] as? String == "tech" && state(steps, "desk~h2") == "DeadLetter", "\(steps)")
        #expect((steps["desk~h2"]?["error"] as? String)?.contains("handed off 2 times (maxHandoffs)") == true, "\(steps)")
        try h.stopController()
    }

    /// Blackboard topics end to end: the scout publishes its findings through the
    /// agent API and the writer reads them; a topic the step does not declare is
    /// refused (403), and the attempt fails with the reason.
    @Test func stepsShareBlackboardTopicsEndToEnd() async throws {
        let h = try Self.harness()
        let brief = try h.start("account-brief", ["-n", "blackboard"])
        #expect(try await h.awaitRun(brief, ["Succeeded", "Failed"]) == "Succeeded")
        let written = try h.output(brief, "write")
        let findings = (written["topics"] as? [String: Any])?["findings"] as? [String: Any]
        #expect(findings?["account"] as? String == "acme" && findings?["renews"] as? String == "2027-05", "\(written)")
        #expect(try h.output(brief, "topic:findings")["renews"] as? String == "2027-05")

        let rogue = try h.start("account-brief", ["-n", "blackboard", "--input", #"notes={"secrets": "all of them"}"#])
        #expect(try await h.awaitRun(rogue, ["Succeeded", "Failed"]) == "Failed")
        let steps = try h.steps(rogue)
        #expect(state(steps, "gather") == "DeadLetter")
        #expect(
            (steps["gather"]?["error"] as? String)?.contains(#"does not publish topic "secrets""#) == true, "\(steps["gather"] ?? [:])")
        #expect(try h.output(rogue, "topic:secrets").isEmpty, "nothing was written")
        try h.stopController()
    }

    /// `review` of a pull request that drops the refund branch's gate shows the new
    /// finding with the route it is on; `explain` lists the bounded paths each agent serves.
    @Test func reviewAndExplainShowTheExpandedPaths() async throws {
        let routing = try String(
            contentsOf: Orlctl.packageRoot.appendingPathComponent("examples/routing/fleet.yaml"), encoding: .utf8)
        let repo = try ReviewTrustTests().repository(
            base: { try $0.write("fleet/fleet.yaml", routing) },
            head: {
                try $0.write(
                    "fleet/fleet.yaml", routing.replacingOccurrences(of: "dependsOn: [approve-refund]", with: "dependsOn: [check]"))
            })
        let review = try await ReviewTrustTests().review(repo)
        #expect(review.status == 1 && review.stdout.contains("error[perm.approval-missing]"), "\(review.stdout)")
        #expect(review.stdout.contains(#"      note: step "refund" runs via route billing of step "classify""#), "\(review.stdout)")
        let markdown = try await ReviewTrustTests().review(repo, ["-o", "markdown"])
        #expect(markdown.stdout.contains(#"  - step "refund" runs via route billing of step "classify""#), "\(markdown.stdout)")

        func explain(_ example: String, _ agent: String) async throws -> String {
            let path = Orlctl.packageRoot.appendingPathComponent("examples/\(example)").path
            let result = try await Orlctl.call(["explain", "agent/\(agent)", "-n", example, "-f", path])
            #expect(result.status == 0, "\(result.stderr)")
            return result.stdout
        }
        let billing = try await explain("routing", "billing-agent")
        #expect(billing.contains("Workflow steps (every path the audit checks):"), "\(billing)")
        let refund = billing.split(separator: "\n").first { $0.contains(" refund ") }
        #expect(refund?.contains(#"via route billing of step "classify""#) == true, "\(billing)")
        let worker = try await explain("delegation", "stats")
        #expect(worker.contains(#"sub-task delegated by "plan" (agent planner), round ≤ 2, at most 4 a round"#), "\(worker)")
        let reviewer = try await explain("revision-loop", "reviewer")
        #expect(reviewer.contains(#"round ≤ 3 of loop "review""#), "\(reviewer)")
        let backup = try await explain("fallback", "backup")
        #expect(backup.contains(#"fallback 1 of "summarize""#), "\(backup)")
        let tech = try await explain("handoff", "tech")
        #expect(tech.contains(#"hand-off turn of "desk""#), "\(tech)")
    }

    /// Each example is valid, and the change that breaks each pattern's proof is flagged.
    @Test func eachPatternsAuditFlagsTheBreakingChangeAndPassesItsTwin() async throws {
        let work = try TemporaryDirectory()
        func validate(_ example: String, _ old: String, _ new: String) async throws -> Orlctl.Result {
            let text = try String(
                contentsOf: Orlctl.packageRoot.appendingPathComponent("examples/\(example)/fleet.yaml"), encoding: .utf8)
            #expect(text.contains(old), "examples/\(example) has no \(old)")
            let path = work.url.appendingPathComponent("\(example).yaml").path
            try text.replacingOccurrences(of: old, with: new).write(toFile: path, atomically: true, encoding: .utf8)
            return try await Orlctl.call(["validate", "-f", path], in: work.url)
        }
        for example in ["routing", "revision-loop", "fallback", "delegation", "handoff", "blackboard"] {
            let valid = try await validate(example, "apiVersion", "apiVersion")
            #expect(valid.status == 0, "\(example): \(valid.stdout)\(valid.stderr)")
        }
        let ungated = try await validate("routing", "dependsOn: [approve-refund]", "dependsOn: [check]")
        #expect(ungated.status == 1 && ungated.stdout.contains("perm.approval-missing"))
        #expect(ungated.stdout.contains(#"runs via route billing of step "classify""#), "\(ungated.stdout)")
        let looping = try await validate(
            "revision-loop", "limits: [{ window: day, tokens: 100000 }]", "limits: [{ window: day, tokens: 30000 }]")
        #expect(looping.stdout.contains("budget.infeasible") && looping.stdout.contains("3 rounds of loop \"review\""), "\(looping.stdout)")
        let handoff = try await validate("fallback", "handoffs: [backup]", "handoffs: [primary]")
        #expect(handoff.status == 1 && handoff.stdout.contains(#"agent "primary" may not hand off to agent "backup""#), "\(handoff.stdout)")
        #expect(handoff.stdout.contains("fallback 1 of \"summarize\""), "\(handoff.stdout)")
        let pool = try await validate("delegation", "handoffs: [web, papers, stats]", "handoffs: [web, papers]")
        #expect(pool.status == 1 && pool.stdout.contains(#"agent "planner" may not hand off to agent "stats""#), "\(pool.stdout)")
        #expect(pool.stdout.contains(#"delegated by "plan""#), "\(pool.stdout)")
        let swarm = try await validate("handoff", "handoffs: [frontdesk, billing, tech]", "handoffs: [frontdesk, billing]")
        #expect(
            swarm.status == 1 && swarm.stdout.contains(#"may not hand off to agent "tech""#)
                && swarm.stdout.contains(#"hand-off 1 of "desk" (at most 2 hand-offs)"#), "\(swarm.stdout)")
        let topic = try await validate("blackboard", "handoffs: [writer, auditor]", "handoffs: [writer]")
        #expect(
            topic.status == 1 && topic.stdout.contains(#"reads topic "findings", which step "gather" publishes"#), "\(topic.stdout)")
        let wide = try await validate("delegation", "limits: [{ window: day, tokens: 100000 }]", "limits: [{ window: day, tokens: 20000 }]")
        #expect(
            wide.stdout.contains("budget.infeasible") && wide.stdout.contains(#"4 sub-tasks × 2 rounds delegated by "plan""#),
            "\(wide.stdout)")
    }
}
