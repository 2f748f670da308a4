import Foundation
import Glibc
import OrlCore
import OrlJSON
import OrlPostgres
import OrlStore
import Testing

/// Workflow runs end to end: the real `orlctl controller`, agent processes that take
/// their tasks over the controller's HTTP API (the reference agent, or the test agent
/// built on its client, `Fixtures/test_agent.py`), and the CLI verbs a person uses.
@Suite(.serialized) struct AgentRunsTests {
    static let fixtures = Orlctl.packageRoot.appendingPathComponent("Tests/OrlCLITests/Fixtures").path
    static let echoKey = "echo-key-value-4f9d2b"

    final class Harness {
        let work: TemporaryDirectory
        var processes: [Process] = []
        /// The state in PostgreSQL (given to every command as ORL_STATE_URL); `state` is
        /// then the controller's data directory (ORL_DATA_DIR).
        let postgres: String?
        var state: String { work.url.appendingPathComponent("state").path }
        var journalPath: String { work.url.appendingPathComponent("journal.jsonl").path }
        /// What every orlctl of the test is given.
        var stateEnvironment: [String: String] { postgres.map { ["ORL_STATE_URL": $0, "ORL_DATA_DIR": state] } ?? [:] }

        init(postgres: String? = nil) throws {
            self.postgres = postgres
            work = try TemporaryDirectory()
            // Written by every test agent, each as the sandbox's uid.
            _ = FileManager.default.createFile(atPath: journalPath, contents: nil, attributes: [.posixPermissions: 0o666])
        }

        deinit {
            for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            for pid in agentProcesses() {
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
            }
        }

        func orlctl(_ arguments: [String], environment: [String: String] = [:]) throws -> Orlctl.Result {
            try Orlctl.run(
                arguments + (postgres == nil ? ["--state", state] : []), in: work.url,
                environment: stateEnvironment.merging(environment) { $1 })
        }

        func apply(_ path: String) throws {
            let applied = try orlctl(["apply", "-f", path])
            #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        }

        @discardableResult
        func background(_ executable: String, _ arguments: [String], log: String, environment: [String: String] = [:]) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
            process.currentDirectoryURL = work.url
            let url = work.url.appendingPathComponent(log)
            _ = FileManager.default.createFile(atPath: url.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: url)
            process.standardError = try FileHandle(forWritingTo: url)
            Changes.signalOnExit(process)
            try process.run()
            processes.append(process)
            return process
        }

        @discardableResult
        func startController(log: String = "controller.log", dataDirectory: String? = nil) throws -> Process {
            guard postgres != nil else { return try background(Orlctl.binary.path, ["controller", "--state", state], log: log) }
            var environment = stateEnvironment
            if let dataDirectory { environment["ORL_DATA_DIR"] = dataDirectory }
            return try background(Orlctl.binary.path, ["controller"], log: log, environment: environment)
        }

        func stopController() throws {
            let stopped = try orlctl(["controller", "stop"])
            #expect(stopped.status == 0, "\(stopped.stderr)")
        }

        func file(_ name: String) -> String { (try? String(contentsOf: work.url.appendingPathComponent(name), encoding: .utf8)) ?? "" }

        /// `orlctl run ...`: the run id it printed.
        func start(_ workflow: String, _ extra: [String] = []) throws -> String {
            let result = try orlctl(["run", "workflow/\(workflow)"] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            return String(result.stdout.dropFirst("run/".count).prefix(13))
        }

        func run(_ id: String) throws -> [String: Any] {
            try Self.run(id, in: orlctl(["runs", "-o", "json", "-A"]))
        }

        /// `run(_:)`, with the command run in this process (`Orlctl.call`): what a wait asks
        /// at each change.
        func runInProcess(_ id: String) async throws -> [String: Any] {
            try await Self.run(
                id,
                in: Orlctl.call(
                    ["runs", "-o", "json", "-A"] + (postgres == nil ? ["--state", state] : []), in: work.url, environment: stateEnvironment)
            )
        }

        private static func run(_ id: String, in result: Orlctl.Result) throws -> [String: Any] {
            let runs = (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])?["runs"] as? [[String: Any]]
            return runs?.first { $0["id"] as? String == id } ?? [:]
        }

        func steps(_ id: String) throws -> [String: [String: Any]] {
            let steps = try run(id)["steps"] as? [[String: Any]] ?? []
            return Dictionary(uniqueKeysWithValues: steps.map { ($0["id"] as? String ?? "", $0) })
        }

        /// Waits (generously) until the run's status is one of `statuses`.
        @discardableResult
        func awaitRun(
            _ id: String, _ statuses: Set<String>, seconds: Double = 90, sourceLocation: Testing.SourceLocation = #_sourceLocation
        )
            async throws
            -> String
        {
            var status = ""
            let reached = await waitUntil(seconds: seconds) {
                status = (try? await runInProcess(id)["status"] as? String) ?? ""
                return statuses.contains(status)
            }
            let described = (try? orlctl(["describe", "run/\(id)"]).stdout) ?? ""
            #expect(
                reached, "run \(id) is \(status), not \(statuses.sorted())\n\(described)\n\(file("controller.log"))\n\(agentLogs())",
                sourceLocation: sourceLocation)
            return status
        }

        func agentLogs() -> String {
            let directory = state + "/logs/default"
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.sorted().map { "== \($0)\n" + ((try? String(contentsOfFile: directory + "/" + $0, encoding: .utf8)) ?? "") }
                .joined()
        }

        /// The test agent's journal: one entry per task event.
        func journal() -> [[String: Any]] {
            file("journal.jsonl").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }

        /// The blackboard's latest value of a step's output.
        func output(_ id: String, _ step: String) throws -> [String: Any] {
            let store: any RunStore = try postgres.map { try PostgresStateStore(url: $0) } ?? SQLiteStateStore(directory: state)
            let value = try store.readRuns { reader throws(StoreError) in try reader.value(of: RunID(id)!, key: step)?.value }
            return (try JSONSerialization.jsonObject(with: Data((value ?? "{}").utf8)) as? [String: Any]) ?? [:]
        }

        /// Live processes whose working directory is inside the state directory: agents.
        func agentProcesses() -> [Int32] {
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
            // By working directory, or by the state every agent is started for (a sandboxed
            // agent's first process works in / and its agent need not lead a process group).
            let mark = Array("ORL_STATE_DIR=\(state)".utf8)
            return entries.compactMap { entry in
                guard let pid = Int32(entry) else { return nil }
                if let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"), cwd.hasPrefix(state + "/") {
                    return pid
                }
                guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
                return environ.split(separator: 0).contains { Array($0) == mark } ? pid : nil
            }
        }
    }

    /// The quickstart's fleet as it is in manifests/, run by the reference agent: the
    /// research and the draft (saved through the write-draft command tool), the approval
    /// gate, then publish (reading the draft through read-draft) and announce. A second
    /// run is denied at the gate. Model spend lands on each step.
    @Test func theContentPipelineRunsEndToEndWithTheReferenceAgent() async throws {
        try await Self.contentPipeline(try Harness())
    }

    static func contentPipeline(_ h: Harness) async throws {
        // What scripts/quickstart does: the agents run in <state>/workspace, where the
        // repository's examples/ are linked.
        try FileManager.default.createDirectory(atPath: h.state + "/workspace", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: h.state + "/workspace/examples", withDestinationPath: Orlctl.packageRoot.appendingPathComponent("examples").path)
        try h.apply(Orlctl.packageRoot.appendingPathComponent("manifests").path)
        try h.startController()

        let id = try h.start("content-pipeline", ["--input", "topic=otters"])
        try await h.awaitRun(id, ["WaitingApproval"])
        let pending = try h.orlctl(["runs", "--pending-approval"])
        #expect(pending.stdout.contains(id) && pending.stdout.contains("editorial-review"), "\(pending.stdout)")
        let draft = try h.output(id, "draft")
        #expect(draft["draft_id"] as? String == id, "write-draft named the draft after the run: \(draft)")
        #expect((draft["revision"] as? Int) == 1)
        let saved = h.state + "/workspace/drafts/\(id)/rev-1.md"
        #expect(FileManager.default.fileExists(atPath: saved), "the drafts store is in the writer's working directory")

        let approved = try h.orlctl(["approve", "run/\(id)", "--step", "editorial-review", "--reason", "ship it"])
        #expect(approved.status == 0, "\(approved.stderr)")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")
        let publish = try h.output(id, "publish")
        #expect(publish["draft_id"] as? String == id && (publish["body"] as? String)?.isEmpty == false, "read-draft read it: \(publish)")

        // Each agent step's model calls are recorded against it.
        let steps = try h.steps(id)
        for step in ["research", "draft", "publish", "announce"] {
            #expect((steps[step]?["tokens"] as? Int ?? 0) > 0, "\(step): \(steps[step] ?? [:])")
            #expect((steps[step]?["costUSD"] as? Double ?? 0) > 0, "\(step)")
        }
        #expect(steps["editorial-review"]?["tokens"] as? Int == 0)
        let described = try h.orlctl(["describe", "run/\(id)"]).stdout
        #expect(described.contains("TOKENS  USD"))
        let usage = try h.orlctl(["usage", "--calls"]).stdout
        #expect(usage.contains("\(id)/draft") && usage.contains("\(id)/research"), "\(usage)")

        // One line per task in each agent's log.
        #expect(
            h.file("state/logs/default/writer.log").contains("task \(id)/draft/1 (content-pipeline/draft, attempt 1 of 2): succeeded in"))
        #expect(h.file("state/logs/default/writer.log").contains("tools: write-draft"))
        #expect(h.file("controller.log").contains("tool call Agent/writer: tool \"write-draft\" for \(id)/draft/1: ok"))

        let denied = try h.start("content-pipeline")
        try await h.awaitRun(denied, ["WaitingApproval"])
        #expect(try h.orlctl(["deny", "run/\(denied)", "--step", "editorial-review", "--reason", "off-topic"]).status == 0)
        #expect(try await h.awaitRun(denied, ["Succeeded", "Failed"]) == "Failed")
        #expect(try h.steps(denied)["publish"]?["state"] as? String == "Skipped")

        try h.stopController()
        #expect(h.file("state/logs/default/publisher.log").contains("publisher: stopped (SIGTERM)"))
    }

    /// A fleet of test agents (`Fixtures/test_agent.py`) and the workflows the tests run.
    static func fleet(echoPort: Int, spenderTokens: Int = 150) -> String {
        func agent(_ name: String, labels: String = "{team: t}", tools: String = "[]", logLevel: String = "info") -> String {
            """
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: \(name), labels: \(labels)}
            spec:
              model: sim/small
              tools: \(tools)
              runtime:
                command: python3
                args: ["\(fixtures)/test_agent.py"]
                # Strict (the default): the shared journal and the reference agent's
                # library are offered to the sandbox explicitly.
                mounts:
                  - {path: "JOURNAL_PATH", writable: true}
                  - {path: "\(Orlctl.packageRoot.appendingPathComponent("examples/agents").path)"}
                env:
                  - {name: JOURNAL, value: "JOURNAL_PATH"}
                  - {name: PYTHONUNBUFFERED, value: "1"}
                  - {name: LOG_LEVEL, value: \(logLevel)}
                gracePeriod: 5s
            ---

            """
        }
        return """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, maxOutputTokens: 10, pricing: {input: 1, output: 1}}]
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: echo-http}
            spec:
              type: http
              http: {url: "http://127.0.0.1:\(echoPort)/echo", credentialSecret: echo-key}
              timeout: 10s
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: cat}
            spec: {type: command, command: {command: /bin/cat}, timeout: 10s}
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: shout}
            spec: {type: command, command: {command: /bin/echo, args: [HEY]}, timeout: 10s}
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: wipe}
            spec: {type: command, command: {command: /bin/true}}
            ---
            \(agent("worker", tools: "[echo-http, cat, shout]"))\(agent("a1"))\(agent("a2"))\(agent("a3"))\(agent("spender", labels: "{team: t, spends: yes}"))\(agent("chainer", logLevel: "debug"))apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: team}
            spec:
              appliesTo: {selector: {matchLabels: {team: t}}}
              allow:
                models: ["sim/*"]
                tools: [echo-http, cat, shout]
                handoffs: [worker, a1, a2, a3, spender]
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: team}
            spec:
              appliesTo: {selector: {matchLabels: {team: t}}}
              limits: [{window: day, usd: 1000}]
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: tight}
            spec:
              appliesTo: {selector: {matchLabels: {spends: "yes"}}}
              scope: perAgent
              limits: [{window: day, tokens: \(spenderTokens)}]
              onExceeded: halt
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: fanout}
            spec:
              steps:
                - {id: split, agent: worker}
                - {id: x, agent: a1, dependsOn: [split], inputs: {barrier: {value: "x,y,z"}}}
                - {id: y, agent: a2, dependsOn: [split], inputs: {barrier: {value: "x,y,z"}}}
                - {id: z, agent: a3, dependsOn: [split], inputs: {barrier: {value: "x,y,z"}}}
                - {id: join, agent: worker, dependsOn: [x, y, z]}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: chain}
            spec:
              steps:
                - {id: one, agent: chainer}
                - {id: two, agent: chainer, dependsOn: [one]}
                - {id: three, agent: chainer, dependsOn: [two]}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: retries}
            spec:
              steps:
                - id: flaky
                  agent: worker
                  inputs: {fail_attempts: {value: "2"}}
                  retry: {attempts: 3, backoff: 1s}
                - {id: after, agent: worker, dependsOn: [flaky]}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: crashy}
            spec:
              steps:
                - id: crash
                  agent: worker
                  inputs: {crash_attempts: {value: "1"}}
                  heartbeatTimeout: 5m
                  retry: {attempts: 2, backoff: 1s}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: doomed}
            spec:
              steps:
                - id: hopeless
                  agent: worker
                  inputs: {fail_attempts: {value: "9"}}
                  retry: {attempts: 2, backoff: 1s}
                - {id: never, agent: worker, dependsOn: [hopeless]}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: tools}
            spec:
              steps:
                - {id: http, agent: worker, tools: [echo-http], inputs: {call_tool: {value: echo-http}}}
                - {id: command, agent: worker, tools: [cat], dependsOn: [http], inputs: {call_tool: {value: cat}}}
                - {id: unlisted, agent: worker, tools: [cat], dependsOn: [command], inputs: {call_tool: {value: shout}}}
                - {id: denied, agent: worker, dependsOn: [unlisted], inputs: {call_tool: {value: wipe}}}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: spend}
            spec:
              steps:
                - {id: first, agent: spender, inputs: {chat_calls: {value: "1"}}}
                - id: second
                  agent: spender
                  dependsOn: [first]
                  inputs: {chat_calls: {value: "20"}}
                  retry: {attempts: 5, backoff: 5s}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: slow}
            spec:
              steps:
                - {id: slow, agent: worker, inputs: {sleep: {value: "4"}}, heartbeatTimeout: 60s}
                - {id: gate, approval: {timeout: 1h}}
                - {id: done, agent: worker, dependsOn: [slow, gate]}
            """
    }

    /// Applies the test fleet (with an echo server for the http tool) and starts a controller.
    static func fixtureHarness(spenderTokens: Int = 150, postgres: String? = nil) async throws -> Harness {
        let h = try Harness(postgres: postgres)
        let portFile = h.work.url.appendingPathComponent("echo.port").path
        try h.background("/usr/bin/env", ["python3", "\(fixtures)/echo_server.py", portFile, "echo.jsonl"], log: "echo.log")
        #expect(await waitUntil(seconds: 30) { FileManager.default.fileExists(atPath: portFile) }, "the echo server did not start")
        let port = try #require(Int(try String(contentsOfFile: portFile, encoding: .utf8)))
        try h.work.write(
            "fleet.yaml", fleet(echoPort: port, spenderTokens: spenderTokens).replacingOccurrences(of: "JOURNAL_PATH", with: h.journalPath))
        try h.apply("fleet.yaml")
        try h.startController()
        return h
    }

    @Test func aFanOutRunsItsBranchesInParallelAndTheJoinGetsThemAll() async throws {
        let h = try await Self.fixtureHarness()
        let id = try h.start("fanout")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")
        // Each branch waited until all three had started: they ran at once.
        let join = try h.output(id, "join")
        #expect(join["dependencies"] as? [String] == ["x", "y", "z"], "\(join)")
        let starts = h.journal().filter { $0["event"] as? String == "start" }.compactMap { $0["step"] as? String }
        #expect(starts.first == "split" && starts.last == "join" && starts.count == 5, "\(starts)")
        try h.stopController()
    }

    /// The reference agent takes a chain's next step from its completion's answer
    /// (`complete?next=0`): one poll for the whole chain, not one per step.
    @Test func theReferenceAgentTakesAChainsNextStepWithItsCompletion() async throws {
        let h = try await Self.fixtureHarness()
        let id = try h.start("chain")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")
        #expect(try h.output(id, "three")["dependencies"] as? [String] == ["two"])
        let log = h.file("state/logs/default/chainer.log").split(separator: "\n")
        let first = try #require(log.firstIndex { $0.contains("task \(id)/one/1 (") && $0.contains("succeeded") }, "\(log)")
        let last = try #require(log.firstIndex { $0.contains("task \(id)/three/1 (") && $0.contains("succeeded") }, "\(log)")
        let between = log[first...last]
        #expect(!between.contains { $0.contains("POST /v1/tasks/next") }, "polled between steps:\n\(between.joined(separator: "\n"))")
        #expect(log.filter { $0.contains("POST /v1/tasks/\(id)/") && $0.contains("/complete?next=0") }.count == 3, "\(log)")
        try h.stopController()
    }

    @Test func aFailingStepIsRetriedUntilItSucceedsAndOneThatKeepsFailingIsADeadLetter() async throws {
        let h = try await Self.fixtureHarness()
        let id = try h.start("retries")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")
        let attempts = h.journal().filter { $0["step"] as? String == "flaky" && $0["event"] as? String == "start" }
        #expect(attempts.compactMap { $0["attempt"] as? Int } == [1, 2, 3])
        #expect(Set(attempts.compactMap { $0["key"] as? String }) == ["\(id)/flaky"], "one idempotency key for every attempt")
        let described = try h.orlctl(["describe", "run/\(id)"]).stdout
        #expect(described.contains("planned failure of attempt 1") && described.contains("planned failure of attempt 2"))

        let doomed = try h.start("doomed")
        #expect(try await h.awaitRun(doomed, ["Succeeded", "Failed"]) == "Failed")
        let steps = try h.steps(doomed)
        #expect(steps["hopeless"]?["state"] as? String == "DeadLetter" && steps["hopeless"]?["attempt"] as? Int == 2)
        #expect(steps["never"]?["state"] as? String == "Skipped")
        let dead = try h.orlctl(["describe", "run/\(doomed)"]).stdout
        #expect(dead.contains("Attempts:") && dead.contains("hopeless  2        Failed"), "\(dead)")
        #expect(try h.orlctl(["events", "--for", "run/\(doomed)"]).stdout.contains("DeadLetter"))
        try h.stopController()
    }

    /// An agent process that crashes in the middle of a step (exit 1) is restarted, and the
    /// step it held is retried by its new process at once: not after its 5-minute
    /// heartbeatTimeout, as a second attempt whose first ended with the agent.
    @Test func aStepWhoseAgentCrashedIsRetriedAtOnceByItsRestartedProcess() async throws {
        let h = try await Self.fixtureHarness()
        let began = ContinuousClock.now
        let id = try h.start("crashy")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")
        #expect(ContinuousClock.now - began < .seconds(60), "the step waited for its lease")
        let events = h.journal().filter { $0["step"] as? String == "crash" }.map { "\($0["event"] ?? "")\($0["attempt"] ?? "")" }
        #expect(events == ["start1", "crash1", "start2", "done2"], "\(events)")
        let steps = try h.steps(id)
        #expect(steps["crash"]?["attempt"] as? Int == 2)
        let described = try h.orlctl(["describe", "run/\(id)"]).stdout
        #expect(described.contains("agent default/worker ended while working on it"), "\(described)")
        try h.stopController()
    }

    /// Tools go through the controller: an http tool gets its credential from the vault
    /// (the agent never sees it), a command tool its input on stdin; a tool the step
    /// does not list, or that no policy allows, is refused.
    @Test func toolCallsGoThroughTheControllerAndFailClosed() async throws {
        let h = try await Self.fixtureHarness()
        let stored = try Orlctl.run(["secret", "set", "echo-key", "--state", h.state], stdin: Self.echoKey + "\n", in: h.work.url)
        #expect(stored.status == 0, "\(stored.stderr)")
        let id = try h.start("tools")
        #expect(
            try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded",
            "\(h.file("controller.log"))\n\(h.agentLogs())\n\(h.processes.map { "\($0.processIdentifier) running=\($0.isRunning) \($0.isRunning ? 0 : $0.terminationStatus) \($0.isRunning ? "" : "\($0.terminationReason.rawValue)")" })\n\((try? FileManager.default.subpathsOfDirectory(atPath: h.state)) ?? [])"
        )

        let http = try #require(try h.output(id, "http")["tool"] as? [String: Any])
        #expect(http["status"] as? Int == 200, "\(http)")
        let answer = try #require(http["answer"] as? [String: Any])
        #expect(answer["task"] as? String == "\(id)/http/1")
        let echoed = try #require(answer["output"] as? [String: Any])
        #expect((echoed["echo"] as? [String: Any])?["from"] as? String == "http")
        #expect(echoed["authorization"] as? String == "Bearer (sensitive)", "the credential is masked in the answer")
        for form in ["dashed", "lower", "upper", "mixed"] {
            // The tool wrote it JSON-escaped: masked as the agent's parser decodes it.
            #expect((echoed[form] as? String)?.contains("(sensitive)") == true, "\(form): \(echoed[form] ?? "nil")")
            #expect((echoed[form] as? String)?.contains(Self.echoKey) == false, "\(form)")
        }
        let received = h.file("echo.jsonl")
        #expect(received.contains("Bearer \(Self.echoKey)"), "the tool got the credential: \(received)")
        #expect(received.contains("\"Idempotency-Key\": \"\(id)/http\""))

        let command = try #require(try h.output(id, "command")["tool"] as? [String: Any])
        let catted = (command["answer"] as? [String: Any])?["output"] as? [String: Any]
        #expect(catted?["from"] as? String == "command", "cat returns its input: \(command)")

        let unlisted = try #require(try h.output(id, "unlisted")["tool"] as? [String: Any])
        #expect(unlisted["status"] as? Int == 403 && unlisted["code"] as? String == "forbidden", "\(unlisted)")
        #expect((unlisted["message"] as? String ?? "").contains(#"does not list tool "shout" (it lists: cat)"#))
        let denied = try #require(try h.output(id, "denied")["tool"] as? [String: Any])
        #expect(denied["status"] as? Int == 403 && denied["code"] as? String == "tool_not_allowed", "\(denied)")

        // Nothing the agent could see holds the credential.
        #expect(!h.file("journal.jsonl").contains(Self.echoKey) && !h.agentLogs().contains(Self.echoKey))
        #expect(!h.file("controller.log").contains(Self.echoKey))
        let events = try h.orlctl(["events", "--for", "agent/worker"]).stdout
        #expect(events.contains("ToolRefused") && events.contains(#"tool "wipe""#), "\(events)")
        try h.stopController()
    }

    /// A budget that halts an agent mid-run: the task it was doing fails with the
    /// gateway's reason, the step waits (Ready) while its agent is halted, and runs
    /// again once an apply raises the limit; the run then succeeds.
    @Test func aBudgetThatHaltsAnAgentMidRunMakesTheRunWaitUntilItIsRaised() async throws {
        try await Self.budgetHalt(try await Self.fixtureHarness())
    }

    static func budgetHalt(_ h: Harness) async throws {
        let id = try h.start("spend")
        var described = ""
        // The halt and the failed attempt are two writes (the controller's and the API's),
        // seen in either order: wait for both.
        let waits = await waitUntil(seconds: 90) {
            described = (try? h.orlctl(["describe", "run/\(id)"]).stdout) ?? ""
            return described.contains("Waiting for Agents:") && described.contains("(BudgetExceeded)")
                && described.contains("model budget exceeded:")
        }
        #expect(waits, "\(described)\n\(h.file("controller.log"))\n\(h.agentLogs())")
        #expect(described.contains("second: agent spender is not running (BudgetExceeded)"), "\(described)")
        #expect(try h.run(id)["status"] as? String == "Running")
        #expect(try h.steps(id)["second"]?["state"] as? String == "Ready")
        #expect(described.contains("model budget exceeded:"), "the failed attempt says why: \(described)")

        // Raising the limit resumes the agent, which runs the step again.
        try h.work.write("fleet.yaml", h.file("fleet.yaml").replacingOccurrences(of: "tokens: 150}", with: "tokens: 1000000}"))
        try h.apply("fleet.yaml")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")
        let steps = try h.steps(id)
        #expect((steps["second"]?["attempt"] as? Int ?? 0) >= 2)
        #expect((steps["first"]?["tokens"] as? Int ?? 0) > 0 && (steps["second"]?["tokens"] as? Int ?? 0) > 0)
        try h.stopController()
    }

    /// kill -9 of the controller while a task runs and an approval waits: the agent
    /// outlives it, the next controller serves the same address, the agent's answer
    /// lands there; nothing runs twice, the approval is still pending, the run ends once.
    @Test func aControllerKilledMidRunIsResumedWithoutRunningAnythingTwice() async throws {
        try await Self.killedMidRun(try await Self.fixtureHarness())
    }

    static func killedMidRun(_ h: Harness) async throws {
        let id = try h.start("slow")
        #expect(
            await waitUntil(seconds: 60) { h.journal().contains { $0["step"] as? String == "slow" && $0["event"] as? String == "start" } },
            "\(h.agentLogs())")
        let first = h.processes.last!
        kill(first.processIdentifier, SIGKILL)
        #expect(await waitUntil(seconds: 30) { !first.isRunning })
        #expect(try h.orlctl(["runs", "--pending-approval"]).stdout.contains("gate"))
        try h.startController(log: "controller-2.log")
        #expect(
            await waitUntil(seconds: 60) { (try? h.steps(id)["slow"]?["state"] as? String) == "Succeeded" },
            "\(h.file("controller-2.log"))\n\(h.agentLogs())")
        #expect(try h.orlctl(["runs", "--pending-approval"]).stdout.contains("gate"), "the approval stayed pending")
        #expect(try h.orlctl(["approve", "run/\(id)", "--step", "gate"]).status == 0)
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")

        let journal = h.journal()
        for step in ["slow", "done"] {
            let started = journal.filter { $0["step"] as? String == step && $0["event"] as? String == "start" }
            #expect(started.count == 1, "\(step) ran once: \(journal)")
            #expect(started.first?["key"] as? String == "\(id)/\(step)")
        }
        #expect(try h.steps(id)["slow"]?["attempt"] as? Int == 1)
        let listed = try h.orlctl(["runs", "-o", "json"]).stdout
        let runs = (try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [String: Any])?["runs"] as? [[String: Any]]
        #expect(runs?.count == 1, "one run: \(listed)")
        try h.stopController()
    }
}
