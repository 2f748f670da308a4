import ArgumentParser
import Foundation
import OrlCore
import OrlJSON
import OrlStore
import OrlYAML

/// The orchestration overhead of a workflow run per step: a chain of N steps and a
/// 1 → W → 1 fan-out, on the real SQLite store, with an agent that answers at once
/// (claim, then complete with a small output, in process). Everything a real run does
/// is done and persisted: the plan, each claim's lease and task with its inputs from
/// the blackboard, each result on the blackboard, the dependants made ready, the
/// attempt records and the run's events; only the agent's work is nothing.
///
/// `--api` drives the same runs through the controller's HTTP API instead: the API
/// server on loopback, agents polling for tasks and completing them over HTTP.
struct RunsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "Time the orchestration overhead per step of a chain and of a fan-out, agents answering at once."
    )

    @Option(help: "Steps in the chain.")
    var chain = 1000

    @Option(help: "Parallel steps in the fan-out (1 → N → 1).")
    var width = 100

    @Option(help: "How many timed runs of each (the median is reported).")
    var runs = 5

    @Flag(help: "Through the controller's HTTP API on loopback: agents long-poll and complete over HTTP.")
    var api = false

    @Option(help: "With --api: how many agents poll at once (each a connection of its own).")
    var agents = 4

    @Flag(
        help:
            "With --api: serve the API from a real `orlctl controller` process (its change feed, runs driver and all) instead of in process; CPU is then given for the controller and for the agents apart."
    )
    var controller = false

    @Option(help: "With --controller: the orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    @Option(
        name: .customLong("mode"),
        help: "With --api: only these ways of getting tasks (poll, carried, stream; repeatable); all by default.")
    var modes: [Mode] = []

    @Option(
        name: .customLong("stream-client"),
        help:
            "With --api, the stream's agents: nio (each task answered in the connection's handler, on its event loop) or ahc (AsyncHTTPClient, a task per agent)."
    )
    var streamClient: StreamClient = .nio

    func run() async throws {
        if api { return try await measureAPI() }
        print("runs: agents answer at once; SQLite (WAL) state, each claim and completion one transaction; median of \(runs)")
        for carried in [false, true] {
            print(
                carried
                    ? "each completion claims the agent's next task in its transaction (what the API's `complete?next` and stream do):"
                    : "a claim, then a completion (two transactions a step):")
            try measure("chain of \(chain) steps", steps: chain, workflow: Self.chain(chain), carried: carried)
            try measure("fan-out 1 → \(width) → 1 (\(width + 2) steps)", steps: width + 2, workflow: Self.fanOut(width), carried: carried)
        }
    }

    private func measure(_ label: String, steps: Int, workflow: String, carried: Bool) throws {
        var starts: [Duration] = []
        var drives: [Duration] = []
        let clock = ContinuousClock()
        for _ in 0..<runs {
            let directory = NSTemporaryDirectory() + "orl-bench-runs-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = try SQLiteStateStore(directory: directory)
            let report = ManifestValidation.validate([YAMLParser().parse(Self.fleet + workflow, file: "bench.yaml")])
            guard report.isValid else {
                throw ValidationError("the bench fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))")
            }
            _ = try ApplyOperation.apply(
                report.fleet, to: store, options: ApplyOptions(source: "bench", appliedBy: "orl-bench"), now: Self.now)
            let operations = RunOperations(store: store)
            let worker = ResourceID(kind: "Agent", name: "worker")
            let output = try JSONParser.parse(#"{"text": "done"}"#, file: "<bench>")

            var began = clock.now
            let run = try operations.start(
                .init(workflow: ResourceID(kind: "Workflow", name: "bench"), by: "orl-bench"), now: Self.now, random: 1)
            starts.append(clock.now - began)
            began = clock.now
            var done = 0
            if carried {
                // What the API does per step: the completion claims the next task in its
                // transaction.
                var task = try operations.claim(agent: worker, now: Self.now)
                while let current = task {
                    task = try operations.completeAndClaim(current.id, agent: worker, output: output, now: Self.now).next
                    if task == nil { task = try operations.claim(agent: worker, now: Self.now) }
                    done += 1
                }
            } else {
                while let task = try operations.claim(agent: worker, now: Self.now) {
                    try operations.complete(task.id, agent: worker, output: output, now: Self.now)
                    done += 1
                }
            }
            drives.append(clock.now - began)
            let phase = try store.readRuns { reader throws(StoreError) in try reader.run(run.id)?.phase }
            guard done == steps, phase == .succeeded else {
                throw ValidationError("the run did \(done) of \(steps) steps and ended \(phase?.rawValue ?? "nowhere")")
            }
        }
        let start = Self.milliseconds(starts.sorted()[starts.count / 2])
        let drive = Self.milliseconds(drives.sorted()[drives.count / 2])
        print("  \(label):")
        print(String(format: "    start (plan, audit, insert):       %.1f ms", start))
        print(String(format: "    claim + complete, all steps:       %.1f ms (%.3f ms per step)", drive, drive / Double(steps)))
        print(String(format: "    overhead per step, start included: %.3f ms", (start + drive) / Double(steps)))
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static let now = Timestamp(milliseconds: 1_795_161_600_000)

    static let fleet = """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, pricing: {input: 0.1, output: 0.1}}]
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: worker}
        spec: {model: sim/small, runtime: {command: /bin/true}}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: worker}
        spec:
          appliesTo: {agents: [worker]}
          allow: {models: ["sim/*"]}
        ---

        """

    static func chain(_ count: Int) -> String {
        var text = "apiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: bench}\nspec:\n  steps:\n"
        for i in 0..<count {
            text +=
                "    - {id: s\(i), agent: worker\(i == 0 ? "" : ", dependsOn: [s\(i - 1)], inputs: {previous: {step: s\(i - 1), key: text}}")}\n"
        }
        return text
    }

    static func fanOut(_ width: Int) -> String {
        var text = "apiVersion: orl.dev/v1\nkind: Workflow\nmetadata: {name: bench}\nspec:\n  steps:\n    - {id: split, agent: worker}\n"
        for i in 0..<width { text += "    - {id: b\(i), agent: worker, dependsOn: [split]}\n" }
        text += "    - {id: join, agent: worker, dependsOn: [\((0..<width).map { "b\($0)" }.joined(separator: ", "))]}\n"
        return text
    }
}
