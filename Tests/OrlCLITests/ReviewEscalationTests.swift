import Foundation
import Testing

/// What `orlctl review` tells a reviewer beyond the permission diff, against real git
/// repositories: budget loosening as an escalation, escalations in SARIF, what a gained
/// permission means, changed tools and models, and merge-base semantics.
@Suite(.serialized) struct ReviewEscalationTests {
    let trust = ReviewTrustTests()

    func review(_ repo: GitFixture, _ extra: [String] = []) async throws -> Orlctl.Result {
        try await trust.review(repo, extra)
    }

    @Test(arguments: [
        ("limits: [{window: day, usd: 5}]", "limits: [{window: day, usd: 50}]", "daily day usd: $5 → $50"),
        ("limits: [{window: day, usd: 5}]", "limits: [{window: day, usd: 5}]\n  onExceeded: alert", "daily onExceeded: halt → alert"),
    ])
    func aLoosenedBudgetIsAnEscalation(_ from: String, _ to: String, _ line: String) async throws {
        let repo = try trust.repository { repo in
            try repo.write("fleet/budget.yaml", GitFleet.budget.replacingOccurrences(of: from, with: to))
        }
        #expect(try await review(repo).status == 0)
        let result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1, "\(result.stdout)")
        #expect(result.stdout.contains("↑ Budget/\(line)"), "\(result.stdout)")
        #expect(
            result.stdout.hasPrefix(
                "0 to add, 1 to change, 0 to remove · permissions: 0 gained, 0 lost · violations: 0 new, 0 fixed · other escalations: 1"))

        // SARIF carries it although head has no diagnostic.
        let sarif = try await review(repo, ["-o", "sarif", "--fail-on-escalation"])
        #expect(sarif.status == 1)
        let object = try JSONSerialization.jsonObject(with: Data(sarif.stdout.utf8)) as? [String: Any]
        let all = ((object?["runs"] as? [[String: Any]])?.first?["results"] as? [[String: Any]]) ?? []
        let results = all.filter { $0["ruleId"] as? String == "review.escalation" }
        #expect(results.count == 1, "\(sarif.stdout)")
        // The spend ceiling it raises is a result of its own.
        #expect(all.map { $0["ruleId"] as? String } == ["review.escalation", "review.spend-increase"], "\(sarif.stdout)")
        #expect(results.first?["baselineState"] as? String == "new")
        #expect(((results.first?["message"] as? [String: Any])?["text"] as? String)?.contains(line) == true, "\(sarif.stdout)")
        #expect(sarif.stdout.contains("\"uri\": \"fleet/budget.yaml\""))
    }

    @Test func aDeletedBudgetLeavingAgentsUncappedIsAnEscalation() async throws {
        let repo = try trust.repository { repo in try repo.git("rm", "-q", "fleet/budget.yaml") }
        let result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("↑ Budget/daily removed (it capped day: $5)"), "\(result.stdout)")
        #expect(result.stdout.contains("↑ agent \"echo\" is covered by no Budget"), "\(result.stdout)")
        // A budget lowered is not one.
        let lowered = try trust.repository { repo in
            try repo.write("fleet/budget.yaml", GitFleet.budget.replacingOccurrences(of: "usd: 5", with: "usd: 1"))
        }
        #expect(try await review(lowered, ["--fail-on-escalation"]).status == 0)
    }

    @Test func aGainedToolSaysWhatItMeans() async throws {
        let repo = try trust.repository { repo in
            try repo.write(
                "fleet/shell.yaml",
                """
                apiVersion: orl.dev/v1
                kind: Tool
                metadata: {name: shell}
                spec:
                  type: command
                  command: {command: /bin/sh}
                  capabilities: [code-execution, filesystem]
                  risk: critical
                """)
            try repo.write("fleet/policy.yaml", GitFleet.policy(tools: ["\"*\""]))
        }
        let result = try await review(repo, ["-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let shell = (object?["permissions"] as? [[String: Any]])?.first { $0["value"] as? String == "shell" }
        #expect(
            shell?["details"] as? [String] == [
                "command tool; capabilities: code-execution, filesystem; risk: critical", "no approval gate",
                "through the wildcard \"*\" of Policy/team-a",
            ], "\(result.stdout)")
        let text = try await review(repo)
        #expect(text.stdout.contains("command tool; capabilities: code-execution, filesystem; risk: critical; no approval gate"))
        let markdown = try await review(repo, ["-o", "markdown"])
        #expect(markdown.stdout.contains("| What it means |"))
    }

    @Test func aToolThatBecomesAShellNamesTheAgentsThatCanCallIt() async throws {
        let repo = try trust.repository { repo in
            try repo.write(
                "fleet/tool.yaml",
                """
                apiVersion: orl.dev/v1
                kind: Tool
                metadata: {name: search}
                spec:
                  type: command
                  command: {command: /bin/sh, args: ["-c", "$QUERY"]}
                  capabilities: [code-execution]
                  risk: critical
                """)
        }
        let result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1, "no permission changed, but the tool escalated: \(result.stdout)")
        #expect(
            result.stdout.contains(
                "↑ Tool/search: type http → command; command - → /bin/sh -c $QUERY; capabilities +code-execution; risk low → critical. agents that can call it: echo (no approval gate)"
            ), "\(result.stdout)")
    }

    @Test func aModelMovingProviderShowsItsKindAndPrice() async throws {
        let repo = try trust.repository { repo in
            try repo.write(
                "fleet/openai.yaml",
                """
                apiVersion: orl.dev/v1
                kind: ModelProvider
                metadata: {name: openai}
                spec:
                  apiStyle: openai
                  baseURL: https://api.openai.com/v1
                  apiKeySecret: openai-key
                  models:
                    - name: gpt-4o
                      pricing: {input: 2.5, output: 10}
                """)
            try repo.write("fleet/agent.yaml", GitFleet.agent().replacingOccurrences(of: "model: sim/small", with: "model: openai/gpt-4o"))
            try repo.write("fleet/policy.yaml", GitFleet.policy().replacingOccurrences(of: "\"sim/*\"", with: "\"sim/*\", \"openai/*\""))
        }
        let result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1)
        #expect(
            result.stdout.contains(
                "↑ Agent/echo: sim/small (simulated provider, $0.15/$0.6 per 1M tokens in/out) → openai/gpt-4o (openai provider at https://api.openai.com/v1, $2.5/$10 per 1M tokens in/out)"
            ), "\(result.stdout)")
    }

    @Test func aBranchBehindMainIsComparedWithItsMergeBase() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("base")
        try repo.git("checkout", "-q", "-b", "change")
        try repo.write("fleet/policy.yaml", GitFleet.policy(tools: ["search", "fetch"]))
        try repo.commit("the branch allows fetch")
        // main moves on: a new tool the branch does not have.
        try repo.git("checkout", "-q", "main")
        try repo.write("fleet/tool2.yaml", GitFleet.tool.replacingOccurrences(of: "name: search", with: "name: mail"))
        try repo.commit("main adds a tool")
        try repo.git("checkout", "-q", "change")

        var result = try await review(repo)
        #expect(result.stdout.hasPrefix("0 to add, 1 to change, 0 to remove"), "main's new tool is not shown removed: \(result.stdout)")
        #expect(result.stdout.contains("Review of main (merge base "), "\(result.stdout)")
        result = try await review(repo, ["--no-merge-base"])
        #expect(result.stdout.hasPrefix("0 to add, 1 to change, 1 to remove"), "\(result.stdout)")
    }
}
