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
    @Test func theContentPipelineRunsOnPostgres() async throws {
        let h = try Harness(postgres: try PostgresCluster.shared().database("pipeline"))
        try await AgentRunsTests.contentPipeline(h)
        let logs = try h.orlctl(["logs", "agent/writer"])
        #expect(logs.status == 0 && logs.stdout.contains("tools: write-draft"), "\(logs.stdout)\(logs.stderr)")
        #expect(h.file("controller.log").contains("listening"), "\(h.file("controller.log"))")
    }

    /// A `halt` budget exhausted mid-run halts the agent (the gateway's reservations are
    /// the store's), and raising it by an apply (seen through LISTEN/NOTIFY, no signal
    /// sent) resumes the run.
    @Test func aBudgetHaltsAndResumesOnPostgres() async throws {
        try await AgentRunsTests.budgetHalt(
            try await AgentRunsTests.fixtureHarness(postgres: try PostgresCluster.shared().database("halt")))
    }

    /// kill -9 of the controller mid-run: the next one resumes it, nothing runs twice.
    @Test func aControllerKilledMidRunResumesOnPostgres() async throws {
        try await AgentRunsTests.killedMidRun(
            try await AgentRunsTests.fixtureHarness(postgres: try PostgresCluster.shared().database("resume")))
    }

    /// Two controllers on one database, each running every agent: both agents of a name
    /// poll for the same tasks, through two APIs, and each task is claimed once (the
    /// claim takes the step's row with SKIP LOCKED, under the store's write lock).
    @Test func twoControllersOnOneDatabaseNeverHandOneTaskToTwoAgents() async throws {
        let h = try await AgentRunsTests.fixtureHarness(postgres: try PostgresCluster.shared().database("claims"))
        // A sibling of the first one's, as on another machine.
        let second = h.work.url.appendingPathComponent("node2").path
        try h.startController(log: "controller-2.log", dataDirectory: second)
        defer { for pid in Self.processes(under: second) { kill(-pid, SIGKILL) } }
        #expect(await waitUntil(seconds: 60) { h.file("controller-2.log").contains("listening") }, "\(h.file("controller-2.log"))")
        let ids = try (0..<4).map { _ in try h.start("fanout") }
        for id in ids { #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded") }
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

    /// A detached controller on PostgreSQL loses every session to the database (as when
    /// the server restarts): it logs it, connects again, and a change applied meanwhile
    /// still reaches it (the agent it adds starts) without any signal.
    @Test func aDetachedControllerReconnectsAfterTheDatabaseEndsItsSessions() async throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("reconnect")
        let database = String(url.split(separator: "/").last!.split(separator: "?").first!)
        let h = try Harness(postgres: url)
        func fleet(_ names: [String]) -> String {
            names.map {
                """
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: \($0), labels: {fleet: t}}
                spec:
                  model: sim/small
                  runtime: {command: sleep, args: ["100000"]}
                ---

                """
            }.joined()
                + """
                apiVersion: orl.dev/v1
                kind: ModelProvider
                metadata: {name: sim}
                spec:
                  apiStyle: simulated
                  models: [{name: small, maxOutputTokens: 10, pricing: {input: 1, output: 1}}]
                ---
                apiVersion: orl.dev/v1
                kind: Policy
                metadata: {name: fleet}
                spec:
                  appliesTo: {selector: {matchLabels: {fleet: t}}}
                  allow: {models: ["sim/*"]}
                ---
                apiVersion: orl.dev/v1
                kind: Budget
                metadata: {name: fleet}
                spec:
                  appliesTo: {selector: {matchLabels: {fleet: t}}}
                  limits: [{window: day, usd: 1}]
                """
        }
        try h.work.write("fleet.yaml", fleet(["one"]))
        try h.apply("fleet.yaml")
        let started = try h.orlctl(["controller", "--detach"])
        #expect(started.status == 0, "\(started.stdout)\(started.stderr)")
        defer {
            if let text = try? String(contentsOfFile: h.state + "/controller.lock", encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(pid, SIGKILL)
            }
        }
        func running(_ name: String) -> Bool {
            Self.processes(under: h.state + "/agents/default/" + name).isEmpty == false
        }
        #expect(await waitUntil(seconds: 60) { running("one") }, "\(h.file("state/logs/controller.log"))")

        try cluster.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND pid <> pg_backend_pid()")
        try h.work.write("fleet.yaml", fleet(["one", "two"]))
        try h.apply("fleet.yaml")
        #expect(await waitUntil(seconds: 60) { running("two") }, "\(h.file("state/logs/controller.log"))")
        #expect(h.file("state/logs/controller.log").contains("lost the LISTEN session"), "\(h.file("state/logs/controller.log"))")
        let stopped = try h.orlctl(["controller", "stop"])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(!running("one") && !running("two"))
    }

    /// Live processes whose working directory is under `directory` (a data directory's agents).
    static func processes(under directory: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry), let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"),
                cwd == directory || cwd.hasPrefix(directory + "/")
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

/// The budget hammer across three gateways: three `orlctl controller` processes on one
/// database, each serving the agent it runs, 16 clients each calling the model through
/// their node's gateway until the shared cap refuses them. The store's conditional
/// reservations keep the three within the cap: zero overshoot in the ledger.
@Suite(.serialized, .enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct PostgresGatewayBudgetTests {
    /// Calls reserve about 130 tokens each (the prompt's bound and max_tokens) and cost 18:
    /// 48 calls in flight hold less than a quarter of the cap, so it fills before a refusal.
    static let cap = 30000

    @Test func threeGatewaysAgainstOneCapNeverOvershoot() async throws {
        let url = try PostgresCluster.shared().database("hammer")
        let work = try TemporaryDirectory()
        try work.write(
            "fleet.yaml",
            """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, maxOutputTokens: 20, pricing: {input: 1, output: 1}}]
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: caller}
            spec:
              model: sim/small
              runtime: {command: sleep, args: ["100000"]}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: caller}
            spec:
              appliesTo: {agents: [caller]}
              allow: {models: ["sim/*"]}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: cap}
            spec:
              appliesTo: {agents: [caller]}
              limits: [{window: day, tokens: \(Self.cap)}]
              onExceeded: halt
            """)
        let environment = ["ORL_STATE_URL": url, "ORL_NO_CONTROLLER": "1"]
        let applied = try Orlctl.run(["apply", "-f", "fleet.yaml"], in: work.url, environment: environment)
        #expect(applied.status == 0, "\(applied.stderr)")

        let nodes = (1...3).map { work.url.appendingPathComponent("node\($0)").path }
        var controllers: [Process] = []
        defer {
            for controller in controllers where controller.isRunning { kill(controller.processIdentifier, SIGKILL) }
            for pid in PostgresDaemonTests.processes(under: work.url.path) { kill(-pid, SIGKILL) }
        }
        for (index, node) in nodes.enumerated() {
            let process = Process()
            process.executableURL = Orlctl.binary
            process.arguments = ["controller"]
            process.environment = ProcessInfo.processInfo.environment.merging(environment.merging(["ORL_DATA_DIR": node]) { $1 }) { $1 }
            let log = work.url.appendingPathComponent("controller-\(index + 1).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
            try process.run()
            controllers.append(process)
        }
        // Each node's API and the token of the agent it started.
        var targets: [String] = []
        for node in nodes {
            var found: String?
            _ = await waitUntil(seconds: 60) {
                guard let api = try? String(contentsOfFile: node + "/controller.api", encoding: .utf8),
                    let token = Self.agentToken(under: node)
                else { return false }
                found = api.trimmingCharacters(in: .whitespacesAndNewlines) + " " + token
                return true
            }
            targets.append(try #require(found, "node \(node) did not start its agent"))
        }

        let script = """
            import json, sys, threading, urllib.request, urllib.error
            targets = [t.split(" ") for t in sys.argv[1:]]
            counts = {"granted": 0, "refused": 0, "other": 0}
            lock = threading.Lock()
            body = json.dumps({"model": "sim/small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}).encode()
            def hammer(api, token):
                refusals = 0
                for _ in range(400):
                    request = urllib.request.Request(api + "/v1/chat/completions", data=body,
                        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=30) as answer:
                            answer.read()
                            kind = "granted"
                    except urllib.error.HTTPError as error:
                        kind = "refused" if error.code == 429 else "other"
                    except Exception:
                        kind = "other"
                    with lock:
                        counts[kind] += 1
                    refusals = refusals + 1 if kind != "granted" else 0
                    if refusals >= 5:
                        return
            threads = [threading.Thread(target=hammer, args=(api, token)) for api, token in targets for _ in range(16)]
            for thread in threads: thread.start()
            for thread in threads: thread.join()
            print(json.dumps(counts))
            """
        try work.write("hammer.py", script)
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        client.arguments = ["python3", work.url.appendingPathComponent("hammer.py").path] + targets
        let output = Pipe()
        client.standardOutput = output
        try client.run()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        client.waitUntilExit()
        let counts = try #require(try JSONSerialization.jsonObject(with: Data(printed.utf8)) as? [String: Int], "\(printed)")

        // SIGTERM: each controller writes its last ledger rows before it exits.
        for controller in controllers { controller.terminate() }
        for controller in controllers { controller.waitUntilExit() }
        let store = try PostgresStateStore(url: url)
        let lines = try store.budgetLines(since: nil)
        let spent = try store.read { reader throws(StoreError) in try reader.spend(since: Timestamp(milliseconds: 0)) }
        let ledger = spent.values.reduce(0) { $0 + $1.tokens }
        let line = try #require(lines.first { $0.key.budgetName == "cap" })
        #expect((counts["granted"] ?? 0) > 0 && (counts["refused"] ?? 0) > 0, "\(counts)")
        #expect(ledger <= Self.cap, "overshoot: the ledger holds \(ledger) tokens against a cap of \(Self.cap) (\(counts))")
        #expect(line.spent.tokens == Int64(ledger), "the store's line counts what the ledger holds: \(line)")
        #expect(line.reserved.tokens == 0, "every hold was settled or released: \(line)")
        // The cap was filled, not refused early: the first refusal (which halts the agent)
        // comes when spend and the holds of the calls in flight reach it.
        #expect(ledger > Self.cap * 7 / 10, "\(ledger) of \(Self.cap) (\(counts))")
    }

    /// OPENAI_API_KEY of the agent process whose working directory is under `directory`.
    static func agentToken(under directory: String) -> String? {
        for pid in PostgresDaemonTests.processes(under: directory) {
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            for entry in String(decoding: environ, as: UTF8.self).split(separator: "\0") where entry.hasPrefix("OPENAI_API_KEY=") {
                return String(entry.dropFirst("OPENAI_API_KEY=".count))
            }
        }
        return nil
    }
}
