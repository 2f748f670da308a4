import Foundation
import Glibc
import Testing

/// The verdicts a security reviewer relies on, each against a real git repository:
/// what review, diff, apply, sync and watch say when the input is broken, when a list
/// changes, when two sources claim one resource, and when a remote goes away.
@Suite(.serialized) struct ReviewTrustTests {
    /// `main` with GitFleet's fleet (or whatever `base` writes), `change` with `head`'s edit.
    func repository(base: (GitFixture) throws -> Void = { try GitFleet.write(to: $0) }, head: (GitFixture) throws -> Void) throws
        -> GitFixture
    {
        let repo = try GitFixture()
        try base(repo)
        try repo.commit("base")
        try repo.git("checkout", "-q", "-b", "change")
        try head(repo)
        try repo.commit("change")
        return repo
    }

    func quickstartRepository(_ head: (GitFixture) throws -> Void) throws -> GitFixture {
        try repository(base: { try Self.writeQuickstart(to: $0) }, head: head)
    }

    func review(_ repo: GitFixture, _ extra: [String] = []) async throws -> Orlctl.Result {
        try await Orlctl.call(["review", "--repo", repo.root.path, "--base", "main", "--head", "change", "--path", "fleet"] + extra)
    }

    /// The quickstart's manifests, copied under `fleet/`.
    static func writeQuickstart(to repo: GitFixture) throws {
        let root = Orlctl.packageRoot.appendingPathComponent("manifests")
        let files = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)!
        for case let file as URL in files where file.pathExtension == "yaml" {
            let relative = String(file.path.dropFirst(root.path.count + 1))
            try repo.write("fleet/" + relative, try String(contentsOf: file, encoding: .utf8))
        }
    }

    // MARK: 1. An unreadable head

    @Test(arguments: [
        // YAML that does not parse: which resources the file defines is unknown.
        "apiVersion: orl.dev/v1\nkind: Policy\nmetadata: {name: team-a}\nspec:\n  appliesTo: {selector: {matchLabels: {team: a}}\n  allow: {tools: [search], models: [\"sim/*\"]}\n",
        // A schema error: the Policy is named but cannot be read.
        "apiVersion: orl.dev/v1\nkind: Policy\nmetadata: {name: team-a}\nspec:\n  appliesTo: {selector: {matchLabels: {team: a}}}\n  alow: {tools: [search], models: [\"sim/*\"]}\n",
    ])
    func anUnreadableHeadGivesItsErrorsNotAPermissionDiff(_ broken: String) async throws {
        let repo = try repository { repo in try repo.write("fleet/policy.yaml", broken) }
        for output in ["text", "markdown", "json", "sarif"] {
            let result = try await review(repo, ["-o", output])
            #expect(result.status == 2, "\(output): \(result.stdout)")
            #expect(result.stdout.contains("fleet/policy.yaml"), "\(output): \(result.stdout)")
            #expect(!result.stdout.contains("lost") && !result.stdout.contains("gained"), "\(output): \(result.stdout)")
            #expect(result.stderr.contains("nothing is reviewed on a partial fleet"), "\(result.stderr)")
        }
        // validate does not audit a namespace whose policies cannot all be read.
        let validate = try await Orlctl.call(["validate", "-f", "fleet"], in: repo.root)
        #expect(validate.status == 1)
        #expect(!validate.stdout.contains("perm."), "\(validate.stdout)")
        // Nor does explain answer on it (2: an error, not "no").
        let explain = try await Orlctl.call(["explain", "agent/echo", "-f", "fleet", "--can", "use", "tool/search"], in: repo.root)
        #expect(explain.status == 2)
    }

    @Test func anUnreadableBaseIsNotComparedButHeadIsJudged() async throws {
        let repo = try repository(
            base: { repo in
                try GitFleet.write(to: repo)
                try repo.write("fleet/policy.yaml", "kind: Policy\napiVersion: orl.dev/v1\nmetadata: {name: team-a\n")
            },
            head: { repo in try GitFleet.write(to: repo) })
        let result = try await review(repo)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("not compared: base has manifests that cannot be read"), "\(result.stdout)")
        #expect(result.stdout.contains("fixed in head: 1"), "\(result.stdout)")
    }

    // MARK: 2. Keyed lists

    @Test func stepsAreComparedByIdInReviewAndDiff() async throws {
        let repo = try quickstartRepository { repo in
            let path = repo.root.appendingPathComponent("fleet/workflows/content-pipeline.yaml")
            let text = try String(contentsOf: path, encoding: .utf8)
            // A step inserted after research, and the approval gate's timeout changed.
            let inserted = text.replacingOccurrences(
                of: "    - id: draft\n",
                with: """
                        - id: fact-check
                          agent: researcher
                          dependsOn: [research]
                          tools: [fetch-page]
                          prompt: Check every claim of the brief against its source.

                        - id: draft

                    """
            ).replacingOccurrences(of: "timeout: 30h", with: "timeout: 10h")
            try repo.write("fleet/workflows/content-pipeline.yaml", inserted)
        }
        let result = try await review(repo)
        #expect(result.stdout.contains("+ spec.steps[id=fact-check]: "), "\(result.stdout)")
        #expect(result.stdout.contains("~ spec.steps[id=editorial-review].approval.timeout: \"30h\" → \"10h\""), "\(result.stdout)")
        // Nothing is read as another step changing.
        #expect(!result.stdout.contains("spec.steps[1]") && !result.stdout.contains("spec.steps[id=draft]"), "\(result.stdout)")
        #expect(!result.stdout.contains("spec.steps[id=publish]"), "\(result.stdout)")

        // diff against a state holding base: the same.
        try repo.git("checkout", "-q", "main")
        #expect(try repo.orlctl(["apply", "-f", "repo/fleet", "--source", "fleet"]).status == 0)
        try repo.git("checkout", "-q", "change")
        let diff = try repo.orlctl(["diff", "-f", "repo/fleet", "--source", "fleet"])
        #expect(diff.status == 1)
        #expect(diff.stdout.contains("+ spec.steps[id=fact-check]: "), "\(diff.stdout)")
        #expect(!diff.stdout.contains("spec.steps[id=draft]") && !diff.stdout.contains("spec.steps[2]"), "\(diff.stdout)")
    }

    @Test func removingAGateIsOneLine() async throws {
        let repo = try quickstartRepository { repo in
            let path = repo.root.appendingPathComponent("fleet/workflows/content-pipeline.yaml")
            var text = try String(contentsOf: path, encoding: .utf8)
            let start = text.range(of: "    - id: editorial-review\n")!
            let end = text.range(of: "    - id: publish\n")!
            text.removeSubrange(start.lowerBound..<end.lowerBound)
            text = text.replacingOccurrences(of: "dependsOn: [editorial-review]", with: "dependsOn: [draft]")
            try repo.write("fleet/workflows/content-pipeline.yaml", text)
        }
        let result = try await review(repo)
        let fieldLines = result.stdout.split(separator: "\n").filter { $0.contains("spec.steps") }
        #expect(fieldLines.count == 2, "\(result.stdout)")
        #expect(result.stdout.contains("- spec.steps[id=editorial-review]: {"), "\(result.stdout)")
        #expect(result.stdout.contains("~ spec.steps[id=publish].dependsOn[0]: \"editorial-review\" → \"draft\""), "\(result.stdout)")
        // The gate's removal is the news: publish-post now runs without a human.
        #expect(result.status == 1)
        #expect(result.stdout.contains("perm.approval-missing"), "\(result.stdout)")
    }

    // MARK: 3. Ownership

    @Test func aSecondSourceCannotTakeAResourceWithoutAskingAndNeverPrunesIt() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.write("other/budget.yaml", GitFleet.budget)
        try repo.commit("first")
        #expect(try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--name", "fleet"]).status == 0)

        // apply -f of a file that declares a resource the git source owns: refused.
        var result = try repo.orlctl(["apply", "-f", "repo/other", "--prune"])
        #expect(result.status == 1)
        #expect(
            result.stderr.contains(
                "conflict: Budget/daily is owned by source git:fleet (applied from fleet/budget.yaml:1). Remove it from these manifests, or pass --force-conflicts to take it over"
            ), "\(result.stderr)")
        #expect(try repo.orlctl(["get", "budget/daily", "-o", "json"]).stdout.contains("\"orl.dev/source\": \"git:fleet\""))

        // A second watcher of the same repository under another name: refused, recorded.
        result = try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--name", "copy"])
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(try repo.source("copy")["result"] as? String == "Refused")
        #expect(((try repo.source("copy")["message"] as? String) ?? "").contains("is owned by source git:fleet"))
        #expect(try repo.orlctl(["get", "agent/echo", "-o", "json"]).stdout.contains("\"orl.dev/source\": \"git:fleet\""))

        // Asked explicitly, the takeover happens; the first source then no longer prunes it.
        result = try repo.orlctl(["apply", "-f", "repo/other", "--force-conflicts"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("taken over from source git:fleet"), "\(result.stdout)")
        try repo.git("rm", "-q", "fleet/budget.yaml")
        try repo.commit("the budget moves to other/")
        result = try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--name", "fleet", "--prune"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(!result.stdout.contains("Budget/daily"), "\(result.stdout)")
        #expect(try repo.orlctl(["get", "budget/daily"]).status == 0)
    }

    // MARK: 4. A path missing in a revision

    @Test func theFirstPullRequestAndADeletedFleetAreReviewed() async throws {
        let first = try repository(base: { try $0.write("README.md", "nothing yet\n") }, head: { try GitFleet.write(to: $0) })
        var result = try await review(first)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("5 to add, 0 to change, 0 to remove"), "\(result.stdout)")
        #expect(result.stdout.contains("+ gained  tool \"search\""), "\(result.stdout)")

        let gone = try repository { repo in try repo.git("rm", "-q", "-r", "fleet") }
        result = try await review(gone)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("0 to add, 0 to change, 5 to remove"), "\(result.stdout)")
        #expect(result.stdout.contains("daily removed"), "\(result.stdout)")

        // A path that is a file is still an error.
        result = try await Orlctl.call(["review", "--repo", gone.root.path, "--base", "main", "--head", "change", "--path", "README.md"])
        #expect(result.status == 2)
    }

    // MARK: 5. An unreachable remote

    @Test func anOutageIsLoggedOnceBackedOffAndItsEndRecorded() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        let arguments = ["--repo", repo.root.path, "--path", "fleet", "--name", "fleet", "--interval", "100ms"]
        #expect(try repo.orlctl(["sync", "--once"] + arguments.dropLast(2)).status == 0)
        let moved = repo.directory.url.appendingPathComponent("moved")
        try FileManager.default.moveItem(at: repo.root, to: moved)

        let watcher = try Watcher(repo: repo, arguments: arguments)
        defer { watcher.stop() }
        try await poll { (try repo.source("fleet")["failures"] as? Int ?? 0) >= 3 }
        let rounds = try repo.source("fleet")["failures"] as? Int ?? 0
        // Backoff: at 100ms doubling, 2 s hold at most 5 rounds (100+200+400+800+1600 ms).
        // Time passing on purpose, in another process whose clock a test cannot move.
        try await Task.sleep(for: .seconds(2))
        let later = try repo.source("fleet")["failures"] as? Int ?? 0
        #expect(later - rounds <= 3, "the remote was asked \(later - rounds) times in 2 s")
        #expect(try repo.events(for: "source/fleet").filter { $0 == "Unreachable" }.count == 1)
        #expect(watcher.log().components(separatedBy: "cannot reach").count - 1 == 1, "\(watcher.log())")
        #expect(watcher.log().contains("no such directory"), "not libgit2's \"unsupported URL protocol\": \(watcher.log())")

        try FileManager.default.moveItem(at: moved, to: repo.root)
        kill(watcher.process.processIdentifier, SIGUSR1)
        try await poll { try repo.events(for: "source/fleet").contains("Reachable") }
        let status = try repo.source("fleet")
        #expect(status["result"] as? String == "Applied" && status["failures"] as? Int == 0)
        try await watcher.waitForLog("the remote is reachable again (it was not for ")
    }

    // MARK: 6. Reserved secrets

    @Test func explainAndTheAuditAgreeOnReservedSecrets() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.write(
            "fleet/provider.yaml",
            GitFleet.provider.replacingOccurrences(of: "apiStyle: simulated", with: "apiStyle: simulated\n  apiKeySecret: sim-key"))
        try repo.write(
            "fleet/policy.yaml",
            GitFleet.policy().replacingOccurrences(of: "models: [\"sim/*\"]", with: "models: [\"sim/*\"], secrets: [\"*\"]"))
        try repo.write(
            "fleet/agent.yaml",
            GitFleet.agent().replacingOccurrences(of: "tools: [search]", with: "tools: [search]\n  secrets: [{name: sim-key, env: KEY}]"))
        let validate = try await Orlctl.call(["validate", "-f", "fleet"], in: repo.root)
        #expect(validate.stdout.contains("perm.secret-reserved"), "\(validate.stdout)")

        let explain = try await Orlctl.call(["explain", "agent/echo", "-f", "fleet", "--can", "use", "secret/sim-key"], in: repo.root)
        #expect(explain.status == 1, "\(explain.stdout)\(explain.stderr)")
        #expect(explain.stdout.hasPrefix("no: agent \"echo\" may not read secret \"sim-key\"\n"), "\(explain.stdout)")
        #expect(explain.stdout.contains("the API key of ModelProvider/sim, which only orl presents"), "\(explain.stdout)")
        let json = try await Orlctl.call(
            ["explain", "agent/echo", "-f", "fleet", "--can", "use", "secret/sim-key", "-o", "json"], in: repo.root)
        #expect(json.stdout.contains("\"outcome\": \"reserved\""), "\(json.stdout)")
        // Another secret under the same "*" is allowed.
        #expect(try await Orlctl.call(["explain", "agent/echo", "-f", "fleet", "--can", "use", "secret/other"], in: repo.root).status == 0)
    }

    // MARK: 7. Messages

    @Test func droppingAnApprovalRequirementSaysWhatIsGained() async throws {
        let repo = try quickstartRepository { repo in
            let path = repo.root.appendingPathComponent("fleet/policies/content-team.yaml")
            let text = try String(contentsOf: path, encoding: .utf8)
            try repo.write(
                "fleet/policies/content-team.yaml", text.replacingOccurrences(of: "    tools: [publish-post]\n", with: "    tools: []\n"))
        }
        let result = try await review(repo)
        #expect(
            result.stdout.contains("+ gained  use of tool \"publish-post\" without an approval gate: no longer required"),
            "\(result.stdout)")
        #expect(!result.stdout.contains("gained approval gate"))
    }

    @Test func aMissingLocalRepositoryIsSaidPlainly() throws {
        let repo = try GitFixture()
        let result = try repo.orlctl(["sync", "--once", "--repo", repo.directory.url.appendingPathComponent("nope").path])
        #expect(result.status == 2)
        #expect(result.stderr.contains("no such directory"), "\(result.stderr)")
        #expect(!result.stderr.contains("unsupported URL protocol"), "\(result.stderr)")
    }

    // MARK: 8. Exit codes

    @Test func diffOfInvalidManifestsIsAnErrorNotAChange() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.write("fleet/agent.yaml", GitFleet.agent().replacingOccurrences(of: "model: sim/small", with: "model: nope/small"))
        let diff = try repo.orlctl(["diff", "-f", "repo/fleet"])
        #expect(diff.status == 2, "\(diff.stdout)\(diff.stderr)")
        #expect(diff.stdout.contains("ref.missing") || diff.stdout.contains("error"), "\(diff.stdout)")
        let json = try repo.orlctl(["diff", "-f", "repo/fleet", "-o", "json"])
        #expect(json.status == 2)
    }
}
