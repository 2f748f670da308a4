import Foundation
import Testing

@Suite(.serialized) struct ReviewCommandTests {
    /// A repository whose main has the fleet, with `head` committed on a branch.
    func repository(_ change: (GitFixture) throws -> Void) throws -> GitFixture {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("base")
        try repo.git("checkout", "-q", "-b", "change")
        try change(repo)
        try repo.commit("change")
        return repo
    }

    func review(_ repo: GitFixture, _ extra: [String] = []) async throws -> Orlctl.Result {
        try await Orlctl.call(["review", "--repo", repo.root.path, "--base", "main", "--head", "change", "--path", "fleet"] + extra)
    }

    @Test func anEscalationIsReportedWithItsCause() async throws {
        let repo = try repository { repo in
            try repo.write("fleet/tool2.yaml", GitFleet.tool.replacingOccurrences(of: "name: search", with: "name: shell"))
            try repo.write("fleet/policy.yaml", GitFleet.policy(tools: ["search", "shell"]))
        }
        var result = try await review(repo, ["-o", "markdown"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first == "1 to add, 1 to change, 0 to remove · permissions: 1 gained, 0 lost · violations: 0 new, 0 fixed")
        #expect(result.stdout.contains("+ Tool/shell ") && result.stdout.contains("fleet/tool2.yaml:1"), "\(result.stdout)")
        #expect(
            result.stdout.contains(
                "| Agent/echo | 🔺 gained | tool \"shell\" | allowed by Policy/team-a (fleet/policy.yaml:6:27); allow added to Policy/team-a | http tool; no declared capabilities; risk: low; no approval gate |"
            ),
            "\(result.stdout)")

        result = try await review(repo, ["--fail-on-escalation"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("+ gained  tool \"shell\": allowed by Policy/team-a"), "\(result.stdout)")

        result = try await review(repo, ["-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect(object?["gained"] as? Int == 1)
        let permission = (object?["permissions"] as? [[String: Any]])?.first
        #expect(permission?["kind"] as? String == "tool" && permission?["value"] as? String == "shell")
        #expect(permission?["file"] as? String == "fleet/policy.yaml")
    }

    @Test func aDeEscalationAndANewError() async throws {
        let repo = try repository { repo in
            try repo.write("fleet/policy.yaml", GitFleet.policy(tools: []))
        }
        let result = try await review(repo)
        // The agent still declares the tool: a new error, so exit 1.
        #expect(result.status == 1)
        #expect(
            result.stdout.hasPrefix("0 to add, 1 to change, 0 to remove · permissions: 0 gained, 1 lost · violations: 1 new, 0 fixed\n"))
        #expect(result.stdout.contains("- lost    tool \"search\": its allow was removed from Policy/team-a"), "\(result.stdout)")
        #expect(result.stdout.contains("fleet/agent.yaml:7:11: error[perm.tool-denied]"), "\(result.stdout)")

        let sarif = try await review(repo, ["-o", "sarif"])
        #expect(sarif.status == 1)
        #expect(sarif.stdout.contains("\"baselineState\": \"new\""))
        #expect(sarif.stdout.contains("\"uri\": \"fleet/agent.yaml\""))
    }

    @Test func aPullRequestThatOnlyReformatsChangesNothing() async throws {
        let repo = try repository { repo in
            try repo.write(
                "fleet/policy.yaml",
                """
                # Reformatted: block style, keys reordered, a comment.
                kind: Policy
                apiVersion: orl.dev/v1
                metadata:
                  name: team-a
                spec:
                  allow:
                    models:
                      - "sim/*"
                    tools:
                      - search
                  appliesTo:
                    selector:
                      matchLabels:
                        team: a
                """)
        }
        let result = try await review(repo)
        #expect(result.status == 0)
        #expect(
            result.stdout.hasPrefix("0 to add, 0 to change, 0 to remove · permissions: 0 gained, 0 lost · violations: 0 new, 0 fixed\n"))
        #expect(result.stdout.contains("Permissions:\n  no agent gains or loses a permission\n"))
        #expect(try await review(repo, ["--fail-on-escalation"]).status == 0)
    }

    @Test func aBadRevisionIsAnError() async throws {
        let repo = try repository { _ in }
        let result = try await Orlctl.call(["review", "--repo", repo.root.path, "--base", "nope", "--head", "change"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("has no revision \"nope\""), "\(result.stderr)")
    }
}
