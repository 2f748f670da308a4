import Foundation
import OrlCore
import OrlJSON
import Testing

/// A front desk that may hand a ticket to billing or tech (and they to each other),
/// at most twice.
let handoffFleet = delegationFleet.replacingOccurrences(
    of: """
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
        """,
    with: """
            - id: desk
              agent: web
              handoff: {agents: [papers, stats], maxHandoffs: 2}
            - {id: close, agent: web, dependsOn: [desk], inputs: {answer: {step: desk}}}
        """
).replacingOccurrences(of: "allow: {handoffs: [planner]}", with: "allow: {handoffs: [web, papers, stats]}")

@Suite struct HandoffTests {
    @Test func everyTurnIsExpandedAndEveryHandOffAudited() throws {
        #expect(handoffFleet.contains("handoff:"))
        let report = validate(handoffFleet, strict: true)
        #expect(report.diagnostics.isEmpty, "\(report.diagnostics.map { "\($0.code): \($0.message)" })")
        let spec = try #require(report.fleet.resources(of: .workflow).first?.workflow)
        #expect(spec.steps.map(\.id.value) == ["desk", "close", "desk~h1", "desk~h2"])
        #expect(spec.steps[1].dependsOn.map(\.value) == ["desk", "desk~h1", "desk~h2"])

        // stats may not hand the ticket to papers: flagged, on every path that could.
        let denied = validate(
            handoffFleet.replacingOccurrences(
                of:
                    "metadata: {name: workers}\nspec:\n  appliesTo: {selector: {matchLabels: {role: worker}}}\n  allow: {handoffs: [web, papers, stats]}",
                with:
                    "metadata: {name: workers}\nspec:\n  appliesTo: {agents: [web, papers]}\n  allow: {handoffs: [web, papers, stats]}\n---\napiVersion: orl.dev/v1\nkind: Policy\nmetadata: {name: stats}\nspec:\n  appliesTo: {agents: [stats]}\n  allow: {handoffs: [web]}"
            )
        ).diagnostics.filter { $0.code == .permHandoffDenied }
        #expect(denied.contains { $0.message.contains(#"agent "stats" may not hand off to agent "papers""#) }, "\(denied.map(\.message))")
        #expect(
            denied.allSatisfy { $0.path?.description.hasPrefix("spec.steps[0].handoff") == true },
            "\(denied.map { $0.path?.description ?? "" })")
    }

    @Test func aHandOffChainRunsWithinItsBound() throws {
        let h = RunHarness(handoffFleet)
        let run = try h.start("research")
        try h.complete(try #require(try h.claim("web")), #"{"handoffTo": "stats", "notes": "a refund?"}"#)
        let turn1 = try #require(try h.claim("stats"))
        #expect(
            turn1.id.step == "desk~h1" && turn1.inputs.compactRendered() == #"{"conversation":{"handoffTo":"stats","notes":"a refund?"}}"#)
        try h.complete(turn1, #"{"handoffTo": "papers"}"#)
        let turn2 = try #require(try h.claim("papers"))
        #expect(turn2.id.step == "desk~h2")
        // A third hand-off is past the bound: refused, the attempt fails.
        let refused = try h.complete(turn2, #"{"handoffTo": "web"}"#)
        #expect(
            refused.state == .deadLetter && refused.error?.contains("handed off 2 times (maxHandoffs)") == true, "\(refused.error ?? "")")
        #expect(h.reasons(run).contains("HandedOff") && h.reasons(run).contains("HandoffRefused"))

        let kept = try h.start("research")
        try h.complete(try #require(try h.claim("web")), #"{"handoffTo": "mallory"}"#)
        #expect(h.run(kept).phase == .failed, "an agent outside the set is refused")

        let direct = try h.start("research")
        try h.complete(try #require(try h.claim("web")), #"{"answer": 42}"#)
        #expect(h.states(direct)["desk~h1"] == .skipped && h.states(direct)["desk~h2"] == .skipped)
        let close = try #require(try h.claim("web"))
        #expect(close.id.step == "close" && close.inputs.compactRendered() == #"{"answer":{"answer":42}}"#)
    }
}
