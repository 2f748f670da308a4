import Foundation
import Glibc
import OrlCore
import OrlPostgres
import OrlTestPostgres
import Testing

/// The daemon on a PostgreSQL state, end to end: the real `orlctl controller` against a
/// throwaway cluster, its agents taking tasks over its API, runs completing, budgets
/// halting, a controller killed mid-run resumed, and two controllers on one database
/// (each with a data directory of its own) never handing one task to two agents.
@Suite(.serialized, .enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresDaemonTests {
    typealias Harness = AgentRunsTests.Harness

    /// The quickstart's fleet (manifests/) and its content pipeline, with the reference
    /// agent, on PostgreSQL: the same test as on SQLite, then `logs` reads the agent's
    /// log from the data directory.
    @Test func theContentPipelineRunsOnPostgres() throws {
        let h = try Harness(postgres: try PostgresCluster.shared().database("pipeline"))
        try AgentRunsTests.contentPipeline(h)
        let logs = try h.orlctl(["logs", "agent/writer"])
        #expect(logs.status == 0 && logs.stdout.contains("tools: write-draft"), "\(logs.stdout)\(logs.stderr)")
        #expect(h.file("controller.log").contains("listening"), "\(h.file("controller.log"))")
    }

    /// A `halt` budget exhausted mid-run halts the agent (the gateway's reservations are
    /// the store's), and raising it by an apply (seen through LISTEN/NOTIFY, no signal
    /// sent) resumes the run.
    @Test func aBudgetHaltsAndResumesOnPostgres() throws {
        try AgentRunsTests.budgetHalt(try AgentRunsTests.fixtureHarness(postgres: try PostgresCluster.shared().database("halt")))
    }

    /// kill -9 of the controller mid-run: the next one resumes it, nothing runs twice.
    @Test func aControllerKilledMidRunResumesOnPostgres() throws {
        try AgentRunsTests.killedMidRun(try AgentRunsTests.fixtureHarness(postgres: try PostgresCluster.shared().database("resume")))
    }

    /// Two controllers on one database, each running every agent: both agents of a name
    /// poll for the same tasks, through two APIs, and each task is claimed once (the
    /// claim takes the step's row with SKIP LOCKED, under the store's write lock).
    @Test func twoControllersOnOneDatabaseNeverHandOneTaskToTwoAgents() throws {
        let h = try AgentRunsTests.fixtureHarness(postgres: try PostgresCluster.shared().database("claims"))
        // A sibling of the first one's, as on another machine.
        let second = h.work.url.appendingPathComponent("node2").path
        try h.startController(log: "controller-2.log", dataDirectory: second)
        defer { for pid in Self.processes(under: second) { kill(-pid, SIGKILL) } }
        #expect(waitUntil(seconds: 60) { h.file("controller-2.log").contains("listening") }, "\(h.file("controller-2.log"))")
        let ids = try (0..<4).map { _ in try h.start("fanout") }
        for id in ids { #expect(try h.await(id, ["Succeeded", "Failed"]) == "Succeeded") }
        let starts = h.journal().filter { $0["event"] as? String == "start" }.compactMap { $0["key"] as? String }
        #expect(starts.count == ids.count * 5, "\(starts)")
        #expect(Set(starts).count == starts.count, "a task started twice: \(starts.sorted())")
        // The second controller ran its own agents, which polled its API for the same tasks.
        let polled = ((try? String(contentsOfFile: second + "/logs/default/worker.log", encoding: .utf8)) ?? "")
        #expect(!polled.isEmpty, "node 2 ran the worker agent too\n\(h.file("controller-2.log"))")
        let stopped = try h.orlctl(["controller", "stop"], environment: ["ORL_DATA_DIR": second])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        try h.stopController()
    }

    /// Live processes whose working directory is under `directory` (a data directory's agents).
    static func processes(under directory: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry), let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"),
                cwd.hasPrefix(directory + "/")
            else { return nil }
            return pid
        }
    }

    /// sync --once and watch keep their mirror in the data directory and apply into the
    /// database; an unreachable database is exit 2 at start for controller, watch and
    /// logs, with nothing written.
    @Test func syncAppliesIntoPostgresAndAnUnreachableDatabaseIsExitTwo() throws {
        let url = try PostgresCluster.shared().database("sync")
        let repo = try GitFixture()
        try repo.write(
            "fleet.yaml",
            """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, maxOutputTokens: 10, pricing: {input: 1, output: 1}}]
            """)
        try repo.git("add", ".")
        try repo.git("commit", "-q", "-m", "first")
        let data = repo.directory.url.appendingPathComponent("data").path
        let environment = ["ORL_STATE_URL": url, "ORL_DATA_DIR": data, "ORL_NO_CONTROLLER": "1"]
        let synced = try Orlctl.run(["sync", "--once", "--repo", repo.root.path, "--name", "fleet"], environment: environment)
        #expect(synced.status == 0, "\(synced.stdout)\(synced.stderr)")
        #expect(FileManager.default.fileExists(atPath: data + "/git/fleet.git"), "the mirror is in the data directory")
        let listed = try Orlctl.run(["get", "modelproviders"], environment: environment)
        #expect(listed.stdout.contains("sim"), "\(listed.stdout)\(listed.stderr)")

        let nowhere = "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
        for arguments in [["controller"], ["watch", "--repo", repo.root.path], ["logs", "agent/a"]] {
            let failed = try Orlctl.run(arguments + ["--state", nowhere, "--data-dir", data])
            #expect(failed.status == 2, "\(arguments): \(failed.stdout)\(failed.stderr)")
            #expect(failed.stderr.contains("cannot open the state at postgres://postgres@127.0.0.1:1/none"), "\(failed.stderr)")
        }
        let sqlite = try Orlctl.run(["logs", "agent/a", "--state", data + "/x", "--data-dir", data])
        #expect(sqlite.status == 2 && sqlite.stderr.contains("--data-dir is for a PostgreSQL state"), "\(sqlite.stderr)")
    }
}
