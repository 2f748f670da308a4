import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Where an agent's code comes from, end to end: real repositories, a real controller,
/// real Python processes that report what they run.
@Suite(.serialized) struct AgentCodeTests {
    /// An agent program that records, in its working directory, its version, the file it
    /// runs from and the revision it was given, then waits for SIGTERM.
    static func program(_ version: String) -> String {
        """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with open("ran.tmp", "w") as f:
            f.write("\(version) " + os.path.abspath(__file__) + " " + os.environ.get("ORL_CODE_REVISION", "-"))
        os.rename("ran.tmp", "ran")
        while True:
            time.sleep(1)

        """
    }

    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, pricing: {input: 0.15, output: 0.6}}]
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: coder}
        spec:
          model: sim/small
          runtime: {command: python3, args: [-u, bin/agent.py], gracePeriod: 2s}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: coder}
        spec:
          appliesTo: {agents: [coder]}
          allow: {models: ["sim/*"]}

        """

    final class Controller {
        let state: String
        var process: Process?
        init(state: String) { self.state = state }

        /// Its standard error.
        var logFile: URL?

        func start(in directory: URL) throws {
            let process = Process()
            process.executableURL = Orlctl.binary
            process.arguments = ["controller", "--state", state]
            process.currentDirectoryURL = directory
            let logFile = directory.appendingPathComponent("controller.log")
            _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: logFile)
            self.logFile = logFile
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            self.process = process
        }

        func log() -> String { logFile.flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? "" }

        /// The restarts it has decided (it logs each as it signals the process).
        func restarts() -> Int { log().components(separatedBy: " restarting ").count - 1 }

        /// Wakes it `count` times, each once the previous wake's `woken` line is out (as
        /// `ControllerCommandTests.Harness.passes` does): the last line proves that what the
        /// first wake made it do (read the store, reconcile what changed) is done.
        func passes(_ count: Int) async -> Bool {
            guard let process else { return false }
            for _ in 0..<count {
                let seen = log().components(separatedBy: "woken: SIGUSR1").count
                kill(process.processIdentifier, SIGUSR1)
                guard await eventually(seconds: 30, { self.log().components(separatedBy: "woken: SIGUSR1").count > seen }) else {
                    return false
                }
            }
            return true
        }

        deinit {
            _ = try? Orlctl.run(["controller", "stop", "--state", state])
            process?.waitUntilExit()
        }
    }

    /// What the agent wrote (`VERSION FILE REVISION`), once it has written it.
    static func ran(state: String) -> [String] {
        let text = (try? String(contentsOfFile: state + "/agents/default/coder/ran", encoding: .utf8)) ?? ""
        return text.split(separator: " ").map(String.init)
    }

    @Test func applyRunsTheAgentsCodeFromTheRepositoryOfTheManifests() async throws {
        let repo = try GitFixture()
        try repo.write("bin/agent.py", Self.program("v1"))
        try repo.write("deploy/orl/fleet.yaml", Self.fleet)
        try repo.commit("first")
        // Applied from elsewhere, with a path into the repository: the code is found at the
        // repository's top, not the working directory nor the manifests' directory.
        let elsewhere = try TemporaryDirectory()
        let apply = try Orlctl.run(
            ["apply", "-f", repo.root.appendingPathComponent("deploy/orl").path, "--state", repo.state], in: elsewhere.url)
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        let controller = Controller(state: repo.state)
        try controller.start(in: elsewhere.url)
        #expect(await eventually(seconds: 20) { Self.ran(state: repo.state).count == 3 }, "\(Self.ran(state: repo.state))")
        let ran = Self.ran(state: repo.state)
        #expect(ran.first == "v1")
        #expect(ran.dropFirst().first == repo.root.resolvingSymlinksInPath().appendingPathComponent("bin/agent.py").path)

        let describe = try Orlctl.run(["describe", "agent/coder", "--state", repo.state])
        #expect(describe.stdout.contains("Code:               \(repo.root.resolvingSymlinksInPath().path)"), "\(describe.stdout)")
        // Applying again from the repository itself changes nothing: the same code root.
        let again = try Orlctl.run(["diff", "-f", "deploy/orl", "--state", repo.state], in: repo.root)
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
    }

    @Test func aGitSourceRunsTheAppliedRevisionsReadOnlyTreeAndRestartsOnACodeChange() async throws {
        let repo = try GitFixture()
        try repo.write("bin/agent.py", Self.program("v1"))
        try repo.write("fleet/fleet.yaml", Self.fleet)
        let first = try repo.commit("first")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet", "--name", "app"]
        var result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let controller = Controller(state: repo.state)
        try controller.start(in: repo.directory.url)
        #expect(await eventually(seconds: 20) { Self.ran(state: repo.state).first == "v1" }, "\(Self.ran(state: repo.state))")
        var ran = Self.ran(state: repo.state)
        let firstTree = URL(fileURLWithPath: ran[1]).deletingLastPathComponent().deletingLastPathComponent().path
        #expect(firstTree.hasPrefix(repo.state + "/code/app/"), "\(ran)")
        #expect(ran[2] == first)
        // The tree is the code: the source's manifests are not in it (a manifest-only commit
        // keeps the tree, so a copy there would be an older commit's).
        #expect(FileManager.default.fileExists(atPath: firstTree + "/bin/agent.py"))
        #expect(!FileManager.default.fileExists(atPath: firstTree + "/fleet/fleet.yaml"))
        // The tree is read-only: the agent writes in its own directory, not in its code.
        #expect(access(firstTree, W_OK) != 0 || getuid() == 0)
        let mode = try FileManager.default.attributesOfItem(atPath: firstTree)[.posixPermissions] as? Int
        #expect(mode.map { $0 & 0o222 } == 0, "\(String(mode ?? 0, radix: 8))")

        // A manifest-only change keeps the code (and the process).
        let pid = try Self.pid(repo)
        var restarts = controller.restarts()
        let labelled = Self.fleet.replacingOccurrences(
            of: "kind: Policy\nmetadata: {name: coder}", with: "kind: Policy\nmetadata: {name: coder, labels: {a: b}}")
        #expect(labelled != Self.fleet)
        try repo.write("fleet/fleet.yaml", labelled)
        try repo.commit("labels")
        result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        // The sync is committed: two turns of the loop after it, the change is reconciled.
        #expect(await controller.passes(2), "\(controller.log())")
        #expect(controller.restarts() == restarts, "\(controller.log())")
        #expect(try Self.pid(repo) == pid)
        #expect(Self.ran(state: repo.state).first == "v1")

        // A code change is a new tree and a restart onto it.
        try repo.write("bin/agent.py", Self.program("v2"))
        let second = try repo.commit("v2")
        result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(await eventually(seconds: 20) { Self.ran(state: repo.state).first == "v2" }, "\(Self.ran(state: repo.state))")
        ran = Self.ran(state: repo.state)
        #expect(ran[2] == second)
        #expect(!ran[1].hasPrefix(firstTree + "/"))
        let describe = try repo.orlctl(["describe", "agent/coder"])
        #expect(describe.stdout.contains("Revision:           \(second)"), "\(describe.stdout)")

        // A revision whose manifests are invalid switches neither code nor manifests.
        try repo.write("bin/agent.py", Self.program("v3"))
        try repo.write("fleet/fleet.yaml", Self.fleet.replacingOccurrences(of: "model: sim/small", with: "model: 42"))
        try repo.commit("broken")
        restarts = controller.restarts()
        result = try repo.orlctl(sync)
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(await controller.passes(2), "\(controller.log())")
        #expect(controller.restarts() == restarts, "\(controller.log())")
        #expect(Self.ran(state: repo.state).first == "v2")
        let trees = try FileManager.default.contentsOfDirectory(atPath: repo.state + "/code/app")
        #expect(trees.count == 2, "\(trees)")

        // A third code revision: the oldest tree is collected, the previous one kept.
        try repo.write("bin/agent.py", Self.program("v4"))
        try repo.write("fleet/fleet.yaml", Self.fleet)
        try repo.commit("v4")
        result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(await eventually(seconds: 20) { Self.ran(state: repo.state).first == "v4" }, "\(Self.ran(state: repo.state))")
        let after = try FileManager.default.contentsOfDirectory(atPath: repo.state + "/code/app")
        #expect(after.count == 2 && !after.contains(URL(fileURLWithPath: firstTree).lastPathComponent), "\(after)")
    }

    static func pid(_ repo: GitFixture) throws -> Int? {
        let get = try repo.orlctl(["get", "agent/coder", "-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(get.stdout.utf8)) as? [String: Any]
        return (object?["status"] as? [String: Any])?["pid"] as? Int
    }
}

/// Level-triggered sync: while the head does not move, what the applied revision
/// declares is put back when it is changed or deleted out of band.
@Suite(.serialized) struct DriftTests {
    @Test func anUnmovedHeadPutsBackWhatChangedOutOfBand() async throws {
        let repo = try GitFixture()
        try GitFleet.write(to: repo)
        try repo.commit("first")
        let sync = ["sync", "--once", "--repo", repo.root.path, "--path", "fleet"]
        var result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")

        // Deleted out of band: back at the next round, with an event saying so.
        #expect(try repo.orlctl(["delete", "agent/echo"]).status == 0)
        result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(try repo.orlctl(["get", "agent/echo"]).status == 0)
        #expect(try repo.events(for: "source/repo").contains("DriftCorrected"))
        #expect(result.stdout.contains("put back what changed out of band"), "\(result.stdout)")
        let events = try repo.orlctl(["events", "--for", "source/repo"]).stdout
        #expect(events.contains("put back what changed out of band"), "\(events)")

        // Changed out of band under the source's name: its spec is put back.
        let edited = try TemporaryDirectory()
        for (file, text) in [
            ("provider", GitFleet.provider), ("tool", GitFleet.tool), ("agent", GitFleet.agent("edited")), ("policy", GitFleet.policy()),
            ("budget", GitFleet.budget),
        ] {
            try edited.write("\(file).yaml", text)
        }
        result = try repo.orlctl(["apply", "-f", edited.url.path, "--source", "git:repo"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(try repo.orlctl(["get", "agent/echo", "-o", "json"]).stdout.contains("edited"))
        result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let restored = try repo.orlctl(["get", "agent/echo", "-o", "json"]).stdout
        #expect(!restored.contains("edited"), "\(restored)")
        #expect(restored.contains("\"one\""), "\(restored)")

        // No drift: the round writes nothing and says it is up to date.
        let history = try repo.orlctl(["history"]).stdout
        result = try repo.orlctl(sync)
        #expect(result.stdout.contains("up to date"), "\(result.stdout)")
        #expect(try repo.orlctl(["history"]).stdout == history)

        // The code tree removed out of band is written again.
        let code = repo.state + "/code/repo"
        let trees = try FileManager.default.contentsOfDirectory(atPath: code)
        for tree in trees {
            let path = code + "/" + tree
            let chmod = Process()
            chmod.executableURL = URL(fileURLWithPath: "/bin/chmod")
            chmod.arguments = ["-R", "u+w", path]
            try chmod.run()
            chmod.waitUntilExit()
            try FileManager.default.removeItem(atPath: path)
        }
        result = try repo.orlctl(sync)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: code) == trees)
    }
}
