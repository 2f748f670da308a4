import Foundation
import Glibc
import OrlCore
import OrlJSON
import OrlStore
import Testing

/// A fleet whose agents are suspended (no processes: the tests play the agents through
/// the store, as the agents' API will), and the workflows the run tests drive.
let runTestFleet = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models: [{name: small, contextWindow: 1000, maxOutputTokens: 100, pricing: {input: 0.1, output: 0.1}}]
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: worker}
    spec: {model: sim/small, suspend: true, runtime: {command: /bin/true}}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: worker}
    spec:
      appliesTo: {agents: [worker]}
      allow: {models: ["sim/*"]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: publish}
    spec:
      inputs: [{name: topic, required: true}]
      steps:
        - {id: draft, agent: worker, inputs: {topic: {input: topic}}}
        - {id: review, dependsOn: [draft], approval: {message: "Ship it?", timeout: 1h}}
        - {id: publish, agent: worker, dependsOn: [review], inputs: {title: {step: draft, key: title}}}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: fan}
    spec:
      steps:
        - {id: split, agent: worker}
        - {id: x, agent: worker, dependsOn: [split]}
        - {id: y, agent: worker, dependsOn: [split]}
        - {id: z, agent: worker, dependsOn: [split]}
        - {id: join, agent: worker, dependsOn: [x, y, z]}
    ---
    apiVersion: orl.dev/v1
    kind: Workflow
    metadata: {name: durable}
    spec:
      steps:
        - {id: a, agent: worker}
        - {id: b, agent: worker, dependsOn: [a], heartbeatTimeout: 2s, retry: {attempts: 2, backoff: 1s}}
        - {id: gate, dependsOn: [a], approval: {timeout: 1h}}
        - {id: c, agent: worker, dependsOn: [b, gate]}
    """

/// Plays the worker agent through the store, as the agents' API will on its behalf.
struct AgentPlayer {
    let operations: RunOperations
    static let worker = ResourceID(kind: "Agent", name: "worker")

    init(state: String) throws { operations = RunOperations(store: try SQLiteStateStore(directory: state)) }

    init(store: any RunStore) { operations = RunOperations(store: store) }

    static var now: Timestamp { Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded())) }

    func claim() throws -> RunTask? { try operations.claim(agent: Self.worker, now: Self.now) }

    func complete(_ task: RunTask, _ output: String = "{}") throws {
        try operations.complete(task.id, agent: Self.worker, output: JSONParser.parse(output, file: "<agent>"), now: Self.now)
    }

    /// Waits (generously) for a task; nil if none came.
    func awaitTask(seconds: Double = 30) async throws -> RunTask? {
        var task: RunTask?
        var failure: (any Error)?
        _ = await waitUntil(seconds: seconds) {
            do { task = try claim() } catch { failure = error }
            return task != nil || failure != nil
        }
        if let failure { throw failure }
        return task
    }
}

@Suite(.serialized) struct RunCommandTests {
    final class Harness {
        let work: TemporaryDirectory
        var processes: [Process] = []
        var state: String { work.url.appendingPathComponent("state").path }

        init() throws {
            work = try TemporaryDirectory()
            try work.write("fleet.yaml", runTestFleet)
            let applied = try orlctl(["apply", "-f", "fleet.yaml"])
            #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        }

        deinit { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        func orlctl(_ arguments: [String]) throws -> Orlctl.Result {
            try Orlctl.run(arguments + ["--state", state], in: work.url)
        }

        /// `orlctl run ...`, returning the run id it printed.
        func start(_ arguments: [String]) throws -> String {
            let result = try orlctl(["run"] + arguments)
            #expect(result.status == 0, "\(result.stderr)")
            let line = try #require(result.stdout.split(separator: "\n").first)
            #expect(line.hasPrefix("run/") && line.hasSuffix(" created"))
            return String(line.dropFirst(4).prefix(13))
        }

        func runs() throws -> [[String: Any]] {
            let result = try orlctl(["runs", "-o", "json"])
            let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            return object?["runs"] as? [[String: Any]] ?? []
        }

        func run(_ id: String) throws -> [String: Any]? { try runs().first { $0["id"] as? String == id } }

        func background(_ arguments: [String], log: String) throws -> Process {
            let process = Process()
            process.executableURL = Orlctl.binary
            process.arguments = arguments + ["--state", state]
            process.currentDirectoryURL = work.url
            let url = work.url.appendingPathComponent(log)
            let errors = work.url.appendingPathComponent(log + ".err")
            _ = FileManager.default.createFile(atPath: url.path, contents: nil)
            _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: url)
            process.standardError = try FileHandle(forWritingTo: errors)
            Changes.signalOnExit(process)
            try process.run()
            processes.append(process)
            return process
        }

        func file(_ name: String) -> String { (try? String(contentsOf: work.url.appendingPathComponent(name), encoding: .utf8)) ?? "" }
    }

    @Test func theVerbsStartListDescribeApproveDenyAndCancelRuns() throws {
        let h = try Harness()
        let player = try AgentPlayer(state: h.state)

        let missing = try h.orlctl(["run", "workflow/publish"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains(#"workflow "publish" needs input "topic""#))
        let unknown = try h.orlctl(["run", "workflow/publsh", "--input", "topic=x"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains(#"Workflow "publsh" is not applied (did you mean "publish"?)"#))
        #expect(try h.orlctl(["run", "agent/worker"]).status == 2)

        let id = try h.start(["workflow/publish", "--input", "topic=otters"])
        let listed = try h.orlctl(["runs"])
        #expect(listed.stdout.contains("RUN  "))
        let row = try #require(listed.stdout.split(separator: "\n").first { $0.hasPrefix(id) })
        #expect(row.contains("publish") && row.contains("Running") && row.contains("0/3") && row.contains("manual"))

        let draft = try #require(try player.claim())
        #expect(draft.id.step == "draft")
        #expect(draft.inputs.compactRendered() == #"{"topic":"otters"}"#)
        try player.complete(draft, #"{"title": "Otters at play"}"#)
        #expect(try player.claim() == nil, "publish waits for the gate")

        let pending = try h.orlctl(["runs", "--pending-approval"])
        #expect(pending.stdout.contains("STEP") && pending.stdout.contains("review") && pending.stdout.contains("Ship it?"))
        #expect(pending.stdout.contains("(deny)"))
        #expect(try h.orlctl(["runs"]).stdout.contains("WaitingApproval"))

        let typo = try h.orlctl(["approve", "run/\(id)", "--step", "reveiw"])
        #expect(typo.status == 1 && typo.stderr.contains(#"did you mean "review"?"#))
        let approved = try h.orlctl(["approve", "run/\(id)", "--step", "review", "--reason", "lgtm"])
        #expect(approved.status == 0 && approved.stdout == "run/\(id) step \"review\" approved\n", "\(approved.stderr)")
        let again = try h.orlctl(["deny", "run/\(id)", "--step", "review"])
        #expect(again.status == 1 && again.stderr.contains("is not waiting for approval: it is Succeeded"))
        #expect(try h.orlctl(["runs", "--pending-approval"]).stderr == "No approvals pending in default namespace.\n")

        let publish = try #require(try player.claim())
        #expect(publish.inputs.compactRendered() == #"{"title":"Otters at play"}"#)
        try player.complete(publish, #"{"url": "https://blog.example/otters"}"#)

        let described = try h.orlctl(["describe", "run/\(id)"])
        #expect(described.status == 0)
        #expect(described.stdout.contains("Status:             Succeeded"))
        #expect(described.stdout.contains("Input:\n  topic: otters\n"))
        #expect(described.stdout.contains("STEP     STATE      ATTEMPTS  AGENT       STARTED"))
        #expect(described.stdout.contains("TOKENS  USD"))
        #expect(described.stdout.contains("review   Succeeded  -         <approval>"))
        #expect(described.stdout.contains("Approved"))
        #expect(described.stdout.contains("step \"review\" approved by "))
        let json = try #require(try h.run(id))
        #expect(json["phase"] as? String == "Succeeded")
        #expect((json["steps"] as? [[String: Any]])?.map { $0["state"] as? String } == ["Succeeded", "Succeeded", "Succeeded"])
        #expect((json["input"] as? [String: String]) == ["topic": "otters"])

        let denied = try h.start(["workflow/publish", "--input", "topic=eels"])
        try player.complete(try #require(try player.claim()))
        #expect(try h.orlctl(["deny", "run/\(denied)", "--step", "review", "--reason", "off-topic"]).status == 0)
        #expect(try h.run(denied)?["phase"] as? String == "Failed")
        #expect(try h.orlctl(["describe", "run/\(denied)"]).stdout.contains("denied by "))

        let cancelled = try h.start(["workflow/fan"])
        let cancel = try h.orlctl(["cancel", "run/\(cancelled)", "--reason", "not today"])
        #expect(cancel.status == 0 && cancel.stdout == "run/\(cancelled) cancelled\n")
        #expect(try h.run(cancelled)?["phase"] as? String == "Cancelled")
        #expect(try h.orlctl(["cancel", "run/\(cancelled)"]).status == 1)
        #expect(try player.claim() == nil)

        let nowhere = try h.orlctl(["describe", "run/0000000000000"])
        #expect(nowhere.status == 1 && nowhere.stderr.contains("run 0000000000000 not found"))
        #expect(try h.orlctl(["describe", "run/nope"]).status == 2)
        let events = try h.orlctl(["events", "--for", "run/\(cancelled)"])
        #expect(events.stdout.contains("Cancelled") && events.stdout.contains("run/\(cancelled)"))
        #expect(try h.runs().count == 3)
        #expect(try h.orlctl(["runs", "--workflow", "fan"]).stdout.split(separator: "\n").count == 2)
    }

    @Test func runWaitFollowsARunToItsEnd() async throws {
        let h = try Harness()
        let player = try AgentPlayer(state: h.state)
        let waiting = try h.background(["run", "workflow/fan", "--wait"], log: "wait.out")
        var done: [String] = []
        while done.count < 5, let task = try await player.awaitTask() {
            // Each step is printed as it changes: Running while the agent holds it.
            let step = task.id.step + String(repeating: " ", count: 5 - task.id.step.count)
            let running = "  \(step)  Running (attempt 1 of "
            #expect(await waitUntil(seconds: 30) { h.file("wait.out").contains(running) }, "\(task.id.step) was not seen Running")
            try player.complete(task, #"{"step": "\#(task.id.step)"}"#)
            done.append(task.id.step)
        }
        #expect(done.first == "split" && done.last == "join" && Set(done) == ["split", "x", "y", "z", "join"])
        #expect(await waitUntil(seconds: 30) { !waiting.isRunning })
        #expect(waiting.terminationStatus == 0)
        let out = h.file("wait.out")
        #expect(out.hasPrefix("run/"))
        #expect(out.contains("  join   Succeeded\n"))
        #expect(out.contains(" Succeeded after "))

        // A run that ends badly ends --wait with exit 1.
        let failing = try h.background(["run", "workflow/publish", "--input", "topic=x", "--wait"], log: "fail.out")
        try player.complete(try await #require(try await player.awaitTask()))
        var id = ""
        #expect(
            await waitUntil(seconds: 30) {
                id = String(h.file("fail.out").dropFirst(4).prefix(13))
                return h.file("fail.out").contains("WaitingApproval")
            })
        #expect(h.file("fail.out").contains("orlctl approve run/\(id) --step review"))
        #expect(try h.orlctl(["deny", "run/\(id)", "--step", "review"]).status == 0)
        #expect(await waitUntil(seconds: 30) { !failing.isRunning })
        #expect(failing.terminationStatus == 1)
        #expect(h.file("fail.out").contains("run/\(id) Failed after"))
    }

    /// kill -9 of the controller in the middle of a run loses nothing: the next one
    /// resumes it. The step that was done is not run again, the one in flight is retried
    /// with the same idempotency key once its lease expires, the pending approval stays.
    @Test func aControllerKilledMidRunIsResumedByTheNext() async throws {
        let h = try Harness()
        let player = try AgentPlayer(state: h.state)
        let first = try h.background(["controller"], log: "controller-1.log")
        let id = try h.start(["workflow/durable"])
        let a = try await #require(try await player.awaitTask())
        #expect(a.id.step == "a")
        try player.complete(a, #"{"n": 1}"#)
        kill(first.processIdentifier, SIGKILL)
        #expect(await waitUntil(seconds: 30) { !first.isRunning })

        // In flight while no controller runs: its lease expires with nobody to notice.
        let b = try #require(try player.claim())
        #expect(b.id.step == "b" && b.id.attempt == 1)
        #expect(try h.orlctl(["runs", "--pending-approval"]).stdout.contains("gate"))

        let second = try h.background(["controller"], log: "controller-2.log")
        let retried = try await #require(try await player.awaitTask(), "the new controller should retry b once its lease expires")
        #expect(retried.id.step == "b" && retried.id.attempt == 2)
        #expect(retried.idempotencyKey == b.idempotencyKey && retried.idempotencyKey == "\(id)/b")
        #expect(retried.dependencies.compactRendered() == #"{"a":{"n":1}}"#)
        #expect(try player.claim() == nil, "a is not run again, c waits")
        try player.complete(retried)
        #expect(try h.orlctl(["approve", "run/\(id)", "--step", "gate"]).status == 0)
        try player.complete(try await #require(try await player.awaitTask()))

        let run = try #require(try h.run(id))
        #expect(run["phase"] as? String == "Succeeded")
        #expect((run["steps"] as? [[String: Any]])?.map { $0["attempt"] as? Int } == [1, 2, 0, 1])
        #expect(try h.runs().count == 1)
        #expect(
            h.file("controller-2.log.err").contains("Retrying: step \"b\" attempt 1 of 2 failed: no heartbeat from agent \"worker\" for 2s")
        )
        let described = try h.orlctl(["describe", "run/\(id)"]).stdout
        #expect(described.contains("Attempts:") && described.contains("LeaseExpired"))
        kill(second.processIdentifier, SIGTERM)
        #expect(await waitUntil(seconds: 30) { !second.isRunning })
    }
}
