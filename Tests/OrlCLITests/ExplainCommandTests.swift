import Foundation
import Testing

@Suite struct ExplainCommandTests {
    /// An agent whose own Policy allows every tool while a team guardrail denies one,
    /// and an agent no Policy selects. The audit reports both (perm.* errors), which
    /// must not stop explain: they are what it explains.
    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 0.1, output: 0.2}}]}
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: shell}
        spec: {type: command, command: {command: sh}}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: bot, labels: {team: ops}}
        spec:
          model: sim/small
          runtime: {command: python3}
          tools: [shell]
          secrets: [{name: db-password}]
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: loner}
        spec:
          model: sim/small
          runtime: {command: python3}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: bot}
        spec:
          appliesTo: {agents: [bot]}
          allow: {tools: ["*"], models: ["sim/*"]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: guardrails}
        spec:
          appliesTo: {selector: {matchLabels: {team: ops}}}
          deny: {tools: [shell]}

        """

    static func withFleet(_ arguments: [String]) async throws -> Orlctl.Result {
        let dir = try TemporaryDirectory()
        try dir.write("fleet.yaml", fleet)
        return try await Orlctl.call(arguments + ["-f", "fleet.yaml"], in: dir.url)
    }

    @Test func describesTheDemoPublisher() async throws {
        let r = try await Orlctl.call(["explain", "agent/publisher", "-f", "manifests/"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.isEmpty)
        try expectGolden(r.stdout, "explain-publisher.txt")
    }

    @Test(arguments: ["agents/publisher", "ag/publisher", "Agent/publisher"])
    func acceptsKubectlSpellings(_ target: String) async throws {
        let r = try await Orlctl.call(["explain", target, "-f", "manifests/", "-n", "default"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("Agent:      publisher\n"))
    }

    @Test func jsonContract() async throws {
        let r = try await Orlctl.call(["explain", "agent/publisher", "-f", "manifests/", "-o", "json"])
        #expect(r.status == 0)
        try expectGolden(r.stdout, "explain-publisher.json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let agent = try #require(object["agent"] as? [String: Any])
        #expect(agent["name"] as? String == "publisher" && agent["namespace"] as? String == "default")
        let policies = try #require(object["policies"] as? [[String: Any]])
        #expect(policies.compactMap { $0["policy"] as? String } == ["Policy/content-team", "Policy/publisher"])
        let declared = try #require(object["declared"] as? [[String: Any]])
        #expect(
            declared.map { "\($0["kind"]!)/\($0["value"]!)" } == [
                "model/sim/gpt-4o-mini", "tool/read-draft", "tool/publish-post", "tool/notify-slack",
            ])
        #expect(declared.allSatisfy { $0["outcome"] as? String == "allowed" && $0["line"] is Int })
        let publish = try #require(declared.first { $0["value"] as? String == "publish-post" })
        #expect((publish["approval"] as? [[String: Any]])?.first?["policy"] as? String == "Policy/content-team")
        let rules = try #require(object["rules"] as? [[String: Any]])
        #expect(rules.contains { $0["effect"] as? String == "deny" && $0["pattern"] as? String == "openai/*" })
    }

    @Test func canUseAllowedToolNeedingApproval() async throws {
        let r = try await Orlctl.call(["explain", "agent/publisher", "-f", "manifests/", "--can", "use", "tool/publish-post"])
        #expect(r.status == 0)
        #expect(
            r.stdout == """
                yes: agent "publisher" may use tool "publish-post"
                  allowed by      Policy/publisher     manifests/policies/agents.yaml:57:25
                  needs approval  Policy/content-team  manifests/policies/content-team.yaml:33:13  a workflow must put a human approval step before it

                """)
    }

    @Test func canUseModelDeniedByWildcard() async throws {
        let r = try await Orlctl.call(["explain", "agent/publisher", "-f", "manifests/", "--can", "use", "model/openai/gpt-4o"])
        #expect(r.status == 1)
        #expect(
            r.stdout == """
                no: agent "publisher" may not use model "openai/gpt-4o"
                  denied by  Policy/content-team  manifests/policies/content-team.yaml:28:14  (matches "openai/*")

                """)
    }

    @Test func denyWinsOverAllow() async throws {
        let r = try await Self.withFleet(["explain", "agent/bot", "--can", "use", "tool/shell"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(
            r.stdout == """
                no: agent "bot" may not use tool "shell"
                  denied by   Policy/guardrails  fleet.yaml:39:18
                  allowed by  Policy/bot         fleet.yaml:32:19  (matches "*") but a deny wins

                """)
        let full = try await Self.withFleet(["explain", "agent/bot"])
        #expect(full.status == 0)
        #expect(full.stdout.contains("  tool    shell        denied            guardrails  shell  fleet.yaml:39:18\n"), "\(full.stdout)")
        #expect(full.stdout.contains("                       allow overridden  bot         *      fleet.yaml:32:19\n"), "\(full.stdout)")
    }

    @Test func nothingIsAllowedByDefault() async throws {
        let secret = try await Self.withFleet(["explain", "agent/bot", "--can", "use", "secret/db-password", "-o", "json"])
        #expect(secret.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(secret.stdout.utf8)) as? [String: Any])
        #expect(object["allowed"] as? Bool == false)
        #expect(object["outcome"] as? String == "not-allowed")
        #expect(object["policies"] as? [String] == ["Policy/bot", "Policy/guardrails"])

        let loner = try await Self.withFleet(["explain", "agent/loner", "--can", "use", "model/sim/small"])
        #expect(loner.status == 1)
        #expect(
            loner.stdout == """
                no: agent "loner" may not use model "sim/small"
                  no Policy applies to agent "loner"; nothing is allowed unless a Policy allows it

                """)
    }

    @Test(arguments: [
        ["--can", "tool/shell"], ["--can", "use"], ["--can", "use", "tool"], ["--can", "use", "tool/"],
        ["--can", "use", "tol/shell"], ["--can", "use", "tool/shell", "extra"],
    ])
    func badQuestionIsAUsageError(_ can: [String]) async throws {
        let r = try await Self.withFleet(["explain", "agent/bot"] + can)
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.contains("--can takes `use KIND/VALUE`"), "\(r.stderr)")
    }

    @Test(arguments: [["explain", "bot"], ["explain", "tool/shell"], ["explain", "frob/bot"], ["explain", "agent/bot", "-o", "yaml"]])
    func badTargetIsAUsageError(_ arguments: [String]) async throws {
        let r = try await Self.withFleet(arguments)
        #expect(r.status == 2)
        #expect(!r.stderr.isEmpty)
    }

    @Test func unknownAgentSuggestsACloseMatch() async throws {
        let r = try await Orlctl.call(["explain", "agent/publsher", "-f", "manifests/"])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr == "orlctl: error: agent \"publsher\" not found in namespace \"default\" (did you mean \"publisher\"?)\n")
        let other = try await Orlctl.call(["explain", "agent/publisher", "-f", "manifests/", "-n", "prod"])
        #expect(other.status == 2)
        #expect(other.stderr.contains("it is in namespace \"default\" (use -n default)"), "\(other.stderr)")
    }

    @Test func invalidManifestsAreReportedNotExplained() async throws {
        let r = try await Orlctl.call(["explain", "agent/worker", "-n", "broken", "-f", "examples/broken"])
        #expect(r.status == 2, "1 would read as no")
        let validate = try await Orlctl.call(["validate", "-f", "examples/broken"])
        #expect(r.stdout == validate.stdout, "the same report as validate")
    }
}
