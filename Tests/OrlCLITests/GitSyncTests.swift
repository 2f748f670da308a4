import Foundation
import OrlCore
import OrlJSON
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A real git repository made with the git CLI (the product reads it with libgit2 only).
final class GitFixture {
    let directory: TemporaryDirectory
    var root: URL { directory.url.appendingPathComponent("repo") }
    var state: String { directory.url.appendingPathComponent("state").path }

    init() throws {
        directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try git("init", "-q", "-b", "main")
    }

    @discardableResult
    func git(_ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = ["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"] + arguments
        process.currentDirectoryURL = root
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else { throw GitFailure(message: "git \(arguments.joined(separator: " ")): \(text)") }
        return text
    }

    struct GitFailure: Error { var message: String }

    func write(_ path: String, _ text: String) throws {
        let file = root.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    /// Commits everything and returns the commit id.
    @discardableResult
    func commit(_ message: String) throws -> String {
        try git("add", "-A")
        try git("commit", "-q", "--allow-empty", "-m", message)
        return try git("rev-parse", "HEAD").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func orlctl(_ arguments: [String]) throws -> Orlctl.Result {
        try Orlctl.run(arguments + ["--state", state], in: directory.url)
    }

    /// `get sources -o json`'s object for the source.
    func source(_ name: String = "repo") throws -> [String: Any] {
        let result = try orlctl(["get", "source/\(name)", "-o", "json"])
        // Not synced yet (a watcher's first round may still be running): no status.
        guard result.status == 0 else { return [:] }
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return object?["status"] as? [String: Any] ?? [:]
    }

    func events(for reference: String) throws -> [String] {
        let result = try orlctl(["events", "--for", reference, "-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return (object?["events"] as? [[String: Any]] ?? []).compactMap { $0["reason"] as? String }
    }
}

/// A small valid fleet in `fleet/`, one resource per file so commits can change one.
enum GitFleet {
    static let provider = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models:
            - name: small
              pricing: {input: 0.15, output: 0.6}
        """
    static let tool = """
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: search}
        spec:
          type: http
          http: {url: "https://search.example.com/q"}
        """
    static func agent(_ arg: String = "one") -> String {
        """
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: echo, labels: {team: a}}
        spec:
          model: sim/small
          runtime: {command: /bin/sleep, args: ["\(arg)"]}
          tools: [search]
        """
    }
    static func policy(tools: [String] = ["search"]) -> String {
        """
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: team-a}
        spec:
          appliesTo: {selector: {matchLabels: {team: a}}}
          allow: {tools: [\(tools.joined(separator: ", "))], models: ["sim/*"]}
        """
    }
    static let budget = """
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: daily}
        spec:
          appliesTo: {selector: {matchLabels: {team: a}}}
          limits: [{window: day, usd: 5}]
        """

    static func write(to repo: GitFixture) throws {
        try repo.write("fleet/provider.yaml", provider)
        try repo.write("fleet/tool.yaml", tool)
        try repo.write("fleet/agent.yaml", agent())
        try repo.write("fleet/policy.yaml", policy())
        try repo.write("fleet/budget.yaml", budget)
        try repo.write("README.md", "not a manifest\n")
    }
}

@Suite(.serialized) struct GitSyncTests {
    @Test func syncAppliesARevisionThenOnlyWhatChanges() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        let first = try repo.commit("first")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet"]

        var result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("Plan: 5 to add, 0 to change, 0 to prune (0 unchanged)."), "\(result.stdout)")
        var status = try repo.source()
        #expect(status["lastAppliedRevision"] as? String == first)
        #expect(status["result"] as? String == "Applied")
        let agent = try repo.orlctl(["get", "agent/echo", "-o", "json"]).stdout
        #expect(agent.contains("\"orl.dev/source\": \"git:repo\""))
        #expect(agent.contains("\"orl.dev/revision\": \"\(first)\""))
        #expect(agent.contains("\"orl.dev/file\": \"fleet/agent.yaml:1\""))

        // The head did not move: nothing else happens.
        result = try repo.orlctl(sync)
        #expect(result.status == 0)
        #expect(result.stdout == "source \"repo\" is up to date at \(first.prefix(7)).\n")

        // A commit that only touches a file outside the manifests is new code for the agent
        // (its relative paths resolve in the applied commit's tree): only its code moves.
        try repo.write("README.md", "still not a manifest\n")
        let docs = try repo.commit("docs")
        result = try repo.orlctl(sync)
        #expect(result.stdout.contains("~ Agent/echo"), "\(result.stdout)")
        #expect(result.stdout.contains("Plan: 0 to add, 1 to change, 0 to prune (4 unchanged)."), "\(result.stdout)")
        #expect(try repo.orlctl(["events", "--for", "agent/echo"]).stdout.contains("code now from revision \(docs.prefix(7))"))

        // One agent changes: one update.
        try repo.write("fleet/agent.yaml", GitFleet.agent("two"))
        let second = try repo.commit("agent")
        result = try repo.orlctl(sync)
        #expect(result.status == 0)
        #expect(result.stdout.contains("~ Agent/echo  fleet/agent.yaml:1, generation 2"), "\(result.stdout)")
        #expect(result.stdout.contains("Plan: 0 to add, 1 to change, 0 to prune (4 unchanged)."))
        status = try repo.source()
        #expect(status["lastAppliedRevision"] as? String == second)
        #expect(try repo.events(for: "source/repo") == ["Synced", "Synced", "Synced"])

        // get and describe show the source.
        let table = try repo.orlctl(["get", "sources"])
        #expect(table.stdout.hasPrefix("NAME  URL"))
        #expect(table.stdout.contains("repo  \(repo.root.path)  <default>  \(second.prefix(7))  Applied  False"))
        let page = try repo.orlctl(["describe", "source/repo"]).stdout
        #expect(page.contains("Inventory:          git:repo (5 resources)"), "\(page)")
        #expect(page.contains("Last Applied:         \(second)"))
    }

    @Test func aBadCommitChangesNothingAndAFixAppliesThenPrune() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.write("fleet/extra.yaml", GitFleet.budget.replacingOccurrences(of: "name: daily", with: "name: extra"))
        let good = try repo.commit("first")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--name", "fleet"]
        #expect(try repo.orlctl(sync).status == 0)

        try repo.write(
            "fleet/agent.yaml",
            GitFleet.agent("two").replacingOccurrences(of: "  model: sim/small", with: "  model: sim/small\n  colour: blue"))
        let bad = try repo.commit("bad")
        var result = try repo.orlctl(sync)
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("fleet/agent.yaml:"), "\(result.stdout)")
        #expect(result.stderr.contains("nothing was applied: source \"fleet\" at \(bad.prefix(7)) has errors"))
        var status = try repo.source("fleet")
        #expect(status["result"] as? String == "Invalid")
        #expect(status["lastAppliedRevision"] as? String == good, "the last good revision stays applied")
        #expect(status["lastAttemptedRevision"] as? String == bad)
        #expect((status["message"] as? String)?.contains("the manifests have 1 error") == true)
        let agent = try repo.orlctl(["get", "agent/echo", "-o", "json"]).stdout
        #expect(agent.contains("\"generation\": 1") && agent.contains("\"one\""), "nothing applied is touched")

        // A watcher does not retry the failed revision in a loop...
        let watcher = try Watcher(
            repo: repo, arguments: ["--repo", repo.root.path, "--path", "fleet", "--name", "fleet", "--interval", "100ms", "--verbose"])
        defer { watcher.stop() }
        // --verbose logs every round: after five, each found the failed revision still at
        // the head (SourceSync.step's retryLater) and none tried it again.
        try await watcher.waitForLog("source fleet: ", count: 5)
        #expect(watcher.log().contains("source fleet: \(bad.prefix(7)) failed before; tried again after "), "\(watcher.log())")
        #expect(try repo.events(for: "source/fleet").filter { $0 == "InvalidManifests" }.count == 1)
        #expect(try repo.source("fleet")["failures"] as? Int == 1)

        // ...and picks up the fix at once.
        try repo.write("fleet/agent.yaml", GitFleet.agent("two"))
        let fix = try repo.commit("fix")
        try await poll { try repo.source("fleet")["lastAppliedRevision"] as? String == fix }
        status = try repo.source("fleet")
        #expect(status["result"] as? String == "Applied")
        // The rounds after it find nothing to do, which --verbose says too.
        try await watcher.waitForLog("source fleet: up to date at \(fix.prefix(7))")
        watcher.stop()
        #expect(
            watcher.log().contains("source fleet: \(fix.prefix(7)) applied as #2 (was \(good.prefix(7))): Plan: 0 to add, 1 to change"),
            "\(watcher.log())")

        // A removed file is pruned only with --prune.
        try repo.git("rm", "-q", "fleet/extra.yaml")
        try repo.commit("remove extra")
        result = try repo.orlctl(sync)
        #expect(result.stdout.contains("No changes. 5 resources up to date."), "\(result.stdout)")
        #expect(try repo.orlctl(["get", "budget/extra"]).status == 0)
        // The revision is applied already, so --prune alone does nothing: it waits for a new head.
        result = try repo.orlctl(sync + ["--prune"])
        #expect(result.stdout.hasPrefix("source \"fleet\" is up to date"), "\(result.stdout)")
        try repo.write("fleet/agent.yaml", GitFleet.agent("three"))
        try repo.commit("three")
        result = try repo.orlctl(sync + ["--prune"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("- Budget/extra  pruned: no longer in the manifests"), "\(result.stdout)")
        #expect(try repo.orlctl(["get", "budget/extra"]).status == 1)
    }

    @Test func aForcePushIsRefusedUnlessAllowed() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        try repo.write("fleet/agent.yaml", GitFleet.agent("two"))
        let second = try repo.commit("second")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet"]
        #expect(try repo.orlctl(sync).status == 0)

        try repo.git("reset", "-q", "--hard", "HEAD~1")
        try repo.write("fleet/agent.yaml", GitFleet.agent("rewritten"))
        let rewritten = try repo.commit("rewritten history")
        var result = try repo.orlctl(sync)
        #expect(result.status == 1)
        #expect(
            result.stderr.contains(
                "the new head \(rewritten.prefix(7)) does not descend from the applied revision \(second.prefix(7)) (a force push?); pass --allow-rewind"
            ), "\(result.stderr)")
        #expect(try repo.events(for: "source/repo").first == "RewindRefused")
        #expect(try repo.source()["lastAppliedRevision"] as? String == second)

        result = try repo.orlctl(sync + ["--allow-rewind"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("1 to change"))
        #expect(try repo.source()["lastAppliedRevision"] as? String == rewritten)
        #expect(try repo.events(for: "source/repo").prefix(2) == ["Synced", "Rewound"])
    }

    @Test func suspendStopsApplyingAndResumeRestarts() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet"]
        #expect(try repo.orlctl(sync).status == 0)

        var result = try repo.orlctl(["suspend", "source/repo"])
        #expect(result.stdout == "source \"repo\" suspended\n")
        try repo.write("fleet/agent.yaml", GitFleet.agent("two"))
        let second = try repo.commit("second")
        result = try repo.orlctl(sync)
        #expect(result.status == 0)
        #expect(result.stderr.contains("source \"repo\" is suspended; nothing was fetched or applied"))
        #expect(try repo.orlctl(["get", "agent/echo", "-o", "json"]).stdout.contains("\"generation\": 1"))
        #expect(try repo.orlctl(["get", "sources"]).stdout.contains("True"))

        #expect(try repo.orlctl(["resume", "source/repo"]).stdout == "source \"repo\" resumed\n")
        result = try repo.orlctl(sync)
        #expect(result.status == 0)
        #expect(try repo.source()["lastAppliedRevision"] as? String == second)
        #expect(try repo.events(for: "source/repo") == ["Synced", "Resumed", "Suspended", "Synced"])
        #expect(try repo.orlctl(["suspend", "source/nope"]).status == 1)
    }

    @Test func anUnreachableRepositoryIsReportedAndTouchesNothing() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        #expect(try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--path", "fleet"]).status == 0)
        let moved = repo.directory.url.appendingPathComponent("moved")
        try FileManager.default.moveItem(at: repo.root, to: moved)
        let result = try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--path", "fleet"])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("orlctl: error: source \"repo\": cannot reach \(repo.root.path)"), "\(result.stderr)")
        let status = try repo.source()
        #expect(status["result"] as? String == "Unreachable")
        #expect(status["lastAppliedRevision"] != nil)
        #expect(try repo.orlctl(["get", "agents"]).stdout.contains("echo"))

        // Another repository cannot take the name.
        let other = try repo.orlctl(["sync", "--once", "--repo", moved.path, "--name", "repo"])
        #expect(other.status == 2)
        #expect(other.stderr.contains("source \"repo\" syncs \(repo.root.path), not \(moved.path); give this one another --name"))
    }

    @Test func aWrongPathOrRefIsReported() throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        var result = try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--path", "nope"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("has no directory nope"), "\(result.stderr)")
        result = try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--ref", "dev", "--name", "dev"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("has no ref \"dev\"; its branches: main"), "\(result.stderr)")
        // An HTTPS token comes from the vault: one that is not there stops the command first.
        result = try repo.orlctl(["sync", "--once", "--repo", repo.root.path, "--name", "tok", "--token-secret", "git-token"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("--token-secret: secret \"git-token\" is not in the vault; set it with orlctl secret set git-token"))
        #expect(try repo.orlctl(["get", "source/tok"]).status == 1, "nothing was attempted")
    }
}

extension GitSyncTests {
    /// POSTs a webhook delivery; returns the status and the body.
    func deliver(_ url: String, event: String, body: String, signature: String?) throws -> (Int, String) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = "POST"
        request.httpBody = Data(body.utf8)
        request.setValue(event, forHTTPHeaderField: "X-GitHub-Event")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        if let signature { request.setValue(signature, forHTTPHeaderField: "X-Hub-Signature-256") }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: (Int, String) = (0, "")
        URLSession.shared.dataTask(with: request) { data, response, _ in
            result = ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self))
            done.signal()
        }.resume()
        done.wait()
        return result
    }

    @Test func aSignedPushWebhookSyncsAtOnceAndABadSignatureDoesNothing() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        let first = try repo.commit("first")
        let secret = "s3cret-\(UUID().uuidString)"
        let arguments = [
            "--repo", repo.root.path, "--path", "fleet", "--interval", "1h", "--webhook", "127.0.0.1:0", "--webhook-secret", "hook",
            "--verbose",
        ]
        // The secret comes from the vault: none there is an error at start.
        let missing = try repo.orlctl(["watch"] + arguments)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("--webhook-secret: secret \"hook\" is not in the vault; set it with orlctl secret set hook"))
        #expect(try Orlctl.run(["secret", "set", "hook", "--state", repo.state], stdin: secret).status == 0)
        // An hour's interval: only the webhook can make it sync again.
        let watcher = try Watcher(repo: repo, arguments: arguments)
        defer { watcher.stop() }
        try await watcher.waitForLog("webhook receiver listening on ")
        // Typed in steps: as one expression inside #require it took 3 s to type-check.
        let listening: Substring? = watcher.log().split(separator: "\n").first { $0.contains("listening on ") }
        let url: String = try #require(listening?.split(separator: " ").last.map(String.init))
        try await watcher.waitForLog("source repo: \(first.prefix(7)) applied")
        #expect(try repo.source()["lastAppliedRevision"] as? String == first)

        // Delivered while the head is still the applied commit, so that a round they rang
        // would log (--verbose) "up to date" before the round of the signed push below.
        let push = #"{"ref": "refs/heads/main", "after": "\#(first)", "repository": {"default_branch": "main"}}"#

        // Unsigned, wrongly signed, or signed with another secret: refused, nothing synced.
        #expect(try deliver(url, event: "push", body: push, signature: nil).0 == 401)
        #expect(try deliver(url, event: "push", body: push, signature: GitWebhookSignature.sign(push, secret: "wrong")).0 == 401)
        let tampered = push.replacingOccurrences(of: "main\"}", with: "main\" }")
        #expect(try deliver(url, event: "push", body: tampered, signature: GitWebhookSignature.sign(push, secret: secret)).0 == 401)
        try await watcher.waitForLog("webhook delivery refused: bad or missing X-Hub-Signature-256")

        // A push to another branch is acknowledged and ignored; a ping is answered.
        let other = #"{"ref": "refs/heads/dev", "repository": {"default_branch": "main"}}"#
        #expect(
            try deliver(url, event: "push", body: other, signature: GitWebhookSignature.sign(other, secret: secret)) == (
                202, "ignored: refs/heads/dev is not the watched ref\n"
            ))
        #expect(try deliver(url, event: "ping", body: "{}", signature: GitWebhookSignature.sign("{}", secret: secret)).0 == 200)

        // Signed with the secret: synced at once.
        try repo.write("fleet/agent.yaml", GitFleet.agent("two"))
        let second = try repo.commit("second")
        let moved = #"{"ref": "refs/heads/main", "after": "\#(second)", "repository": {"default_branch": "main"}}"#
        #expect(
            try deliver(url, event: "push", body: moved, signature: GitWebhookSignature.sign(moved, secret: secret)) == (202, "syncing\n"))
        try await watcher.waitForLog("source repo: \(second.prefix(7)) applied")
        #expect(try repo.source()["lastAppliedRevision"] as? String == second)
        #expect(watcher.log().contains("webhook: push of refs/heads/main to \(second.prefix(7)); syncing"))
        // The rounds so far: the first, and the signed push's; none between them.
        let rounds = watcher.log().split(separator: "\n").filter { $0.contains("source repo: ") && !$0.contains("webhook") }
        #expect(rounds.count == 2 && rounds.allSatisfy { $0.contains(" applied ") }, "\(watcher.log())")
    }
}

/// Signs as GitHub does; checked against GitHub's own example in GitWebhookTests.
enum GitWebhookSignature {
    static func sign(_ body: String, secret: String) -> String { GitWebhook.signature(Array(body.utf8), secret: secret) }
}

/// Waits (`waitUntil`) until `condition` holds, for up to a generous deadline; a timeout is
/// recorded as an issue.
func poll(timeout: TimeInterval = 30, _ condition: () throws -> Bool) async throws {
    if try await waitUntil(seconds: timeout, condition) { return }
    Issue.record("condition not met within \(timeout) s")
}

/// `orlctl watch` in the background, its standard error collected.
final class Watcher: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var text = ""
    private let closed = DispatchSemaphore(value: 0)

    init(repo: GitFixture, arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = Orlctl.binary
        process.arguments = ["watch"] + arguments + ["--state", repo.state]
        // No controller started in the background, as for every other command here: one
        // outlived the test, and wrote into its directory while the test removed it.
        let settings = ["ORL_NO_CONTROLLER": "1"].merging(environment) { _, new in new }
        process.environment = ProcessInfo.processInfo.environment.merging(settings) { _, new in new }
        process.currentDirectoryURL = repo.directory.url
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            guard !data.isEmpty else {
                // End of file: the watcher and whatever shared its standard error are gone.
                handle.readabilityHandler = nil
                self.closed.signal()
                return
            }
            self.lock.lock()
            self.text += String(decoding: data, as: UTF8.self)
            self.lock.unlock()
        }
        try process.run()
    }

    func log() -> String {
        lock.lock()
        defer { lock.unlock() }
        return text
    }

    func waitForLog(_ needle: String) async throws {
        try await poll { self.log().contains(needle) }
    }

    /// Waits until `needle` is in at least `count` lines (e.g. `--verbose`'s round lines).
    func waitForLog(_ needle: String, count: Int) async throws {
        try await poll { self.log().split(separator: "\n").count { $0.contains(needle) } >= count }
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
        // Whatever was still in the pipe, up to its end.
        _ = closed.wait(timeout: .now() + 5)
    }
}

extension ControllerCommandTests {
    /// The watcher and the controller together: a commit that changes one agent is one
    /// update, and the running controller restarts that agent only.
    @Test func aSyncedCommitRestartsTheChangedAgent() async throws {
        let h = try Harness()
        let repo = h.work.url.appendingPathComponent("repo")
        func git(_ arguments: String...) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            process.arguments = ["-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"] + arguments
            process.currentDirectoryURL = repo
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "git \(arguments)")
        }
        try h.work.write("repo/fleet.yaml", h.manifests([.init(name: "a"), .init(name: "b")]))
        try git("init", "-q", "-b", "main")
        try git("add", "-A")
        try git("commit", "-q", "-m", "first")
        let sync = ["sync", "--once", "--repo", repo.path]
        #expect(try h.orlctl(sync).status == 0)
        try h.startController()
        let first = try await h.waitForAgents(["a", "b"], "after the first sync")

        try h.work.write("repo/fleet.yaml", h.manifests([.init(name: "a", env: "v2"), .init(name: "b")]))
        try git("commit", "-q", "-am", "a v2")
        let result = try h.orlctl(sync)
        #expect(result.stdout.contains("Plan: 0 to add, 1 to change, 0 to prune"), "\(result.stdout)")
        #expect(await waitUntil { h.agents()["a"].map { $0.count == 1 && $0[0] != first["a"] } == true }, "\(h.log())")
        #expect(h.agents()["b"] == [first["b"]!], "the unchanged agent keeps running")
        #expect(h.log().contains("Agent/a"))
        try await h.stopController()
    }
}
