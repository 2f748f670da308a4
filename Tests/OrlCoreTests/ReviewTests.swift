import Foundation
import OrlCore
import OrlJSON
import Testing

@Suite struct ReviewTests {
    func review(_ head: String, base: String = baseFleet) -> Review {
        Review.compare(base: validate(base, file: "fleet.yaml"), head: validate(head, file: "fleet.yaml"))
    }

    @Test func aReformattedFleetChangesNothing() {
        let reformatted =
            baseFleet
            .replacingOccurrences(of: "pricing: {input: 0.15, output: 0.6}", with: "pricing:\n        output: 0.60\n        input: 0.150")
            .replacingOccurrences(of: "allow: {tools: [publish-post]}", with: "allow:\n        tools:\n          - publish-post")
        let r = review(reformatted)
        #expect(r.plan.isEmpty)
        #expect(r.permissions.isEmpty && r.budgets.isEmpty && r.newDiagnostics.isEmpty && r.fixedDiagnostics.isEmpty)
        #expect(r.summary == "0 to add, 0 to change, 0 to remove · permissions: 0 gained, 0 lost · violations: 0 new, 0 fixed")
    }

    @Test func anEscalationNamesThePolicyChangeThatCausedIt() {
        let head = baseFleet.replacingOccurrences(
            of: "allow: {tools: [web-search], models: [\"sim/*\"], handoffs: [writer, publisher]}",
            with: "allow: {tools: [web-search, publish-post], models: [\"sim/*\"], handoffs: [writer, publisher]}")
        let r = review(head)
        #expect(r.plan.updates == 1)
        let gains = r.permissions.filter { $0.change == .gained }
        // researcher and writer (selected by label) now may publish; publisher already could.
        #expect(gains.map(\.agent.name).sorted() == ["researcher", "writer"])
        #expect(gains.allSatisfy { $0.subject == .permission(.tool, "publish-post") })
        #expect(gains.first?.cause.contains("allowed by Policy/content-team (fleet.yaml:") == true)
        #expect(gains.first?.cause.hasSuffix("; allow added to Policy/content-team") == true)
        #expect(r.lost == 0)
        #expect(r.summary.contains("permissions: 2 gained, 0 lost"))
    }

    @Test func aDeEscalationAndAnApprovalGateRemoved() {
        // content-team selects all three (by label, and the publisher by name): dropping
        // web-search from its allow takes it from each; dropping its approval gate frees
        // the publisher's publish-post.
        let head =
            baseFleet
            .replacingOccurrences(
                of: "allow: {tools: [web-search], models: [\"sim/*\"], handoffs: [writer, publisher]}",
                with: "allow: {models: [\"sim/*\"], handoffs: [writer, publisher]}"
            )
            .replacingOccurrences(of: "  requireApproval: {tools: [publish-post]}\n", with: "")
            .replacingOccurrences(of: "  tools: [web-search]\n", with: "")
        let r = review(head)
        let lost = r.permissions.filter { $0.change == .lost }
        #expect(lost.map(\.agent.name).sorted() == ["publisher", "researcher", "writer"])
        #expect(lost.allSatisfy { $0.cause == "its allow was removed from Policy/content-team" })
        let gate = r.permissions.filter { $0.subject == .approval(tool: "publish-post") }
        #expect(gate.map(\.change) == [.gained])
        #expect(gate.first?.agent.name == "publisher")
        #expect(gate.first?.cause == "no longer required: its requirement was removed from Policy/content-team")
        #expect(r.newErrors == 0, "\(r.newDiagnostics.map(\.message))")
    }

    @Test func aNewPolicyAndANewDenyAreTheirOwnCauses() {
        let head =
            baseFleet + """

                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: {name: lockdown}
                spec:
                  appliesTo: {agents: [researcher]}
                  deny: {tools: [web-search]}
                """
        let r = review(head)
        let lost = r.permissions.filter { $0.change == .lost }
        #expect(lost.count == 1)
        #expect(lost.first?.cause.hasPrefix("denied by Policy/lockdown (fleet.yaml:") == true)
        #expect(lost.first?.cause.hasSuffix("; Policy/lockdown is new") == true)
        // The researcher's tool is now denied: a new error in head.
        #expect(r.newErrors == 1)
        #expect(r.newDiagnostics.first?.code == .permToolDenied)
        // Reviewing back the other way, it is fixed.
        let back = Review.compare(base: validate(head), head: validate(baseFleet))
        #expect(back.fixedDiagnostics.map(\.code) == [.permToolDenied])
        #expect(back.newErrors == 0)
        #expect(back.permissions.map(\.change) == [.gained])
        #expect(back.permissions.first?.cause.contains("Policy/lockdown was removed") == true)
    }

    @Test func budgetChangesAndUncoveredAgents() {
        let head =
            baseFleet
            .replacingOccurrences(
                of: "limits: [{window: day, usd: 10}]", with: "limits: [{window: day, usd: 15}, {window: month, tokens: 1000}]"
            )
            .replacingOccurrences(
                of: "appliesTo: {selector: {matchLabels: {team: content}}, agents: [publisher]}", with: "appliesTo: {agents: [publisher]}")
        let r = review(head)
        let messages = r.budgets.map(\.message)
        #expect(messages.contains("Budget/daily day usd: $10 → $15"))
        #expect(messages.contains("Budget/daily month tokens: no cap → 1000"))
        #expect(r.budgets.filter { $0.change == .uncovered }.map(\.subject.name) == ["researcher", "writer"])
        #expect(r.budgets.first { $0.change == .raised }?.loosens == true)
    }

    @Test func thePlanListsAddsChangesAndRemovals() {
        let head = baseFleet.replacingOccurrences(of: "metadata: {name: publishing}", with: "metadata: {name: publishing2}")
        let r = review(head)
        #expect(r.plan.additions == 1 && r.plan.prunes == 1)
        #expect(r.summary.hasPrefix("1 to add, 0 to change, 1 to remove"))
    }
}
