import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrlCore
import OrlJSON
import OrlRuntime
import OrlServer
import OrlStore
import OrlYAML
import Synchronization

/// `orl-bench runs --api`: the per-step overhead as agents see it, through the
/// controller's HTTP API. The API server (the one `orlctl controller` serves: gateway,
/// task routes, long-poll waiters, a connection of its own to the state) listens on
/// loopback; `--agents` agents, each a connection of its own, long-poll for tasks and
/// complete each at once with a small output. Timed from the run's start to its last
/// completion; the run's own start (plan, audit, insert) is included.
extension RunsBench {
    func measureAPI() async throws {
        print(
            "runs --api: \(agents) agents long-polling the controller's HTTP API on loopback, answering at once; SQLite (WAL) state; median of \(runs)"
        )
        print("  each measured three ways, alternating: a poll per task (`/v1/tasks/next`); the next task carried by the")
        print("  completion's answer (`complete?next=0`, what the reference agent does), polling only when none came; and")
        print("  tasks pushed on one open request answered on the same one (`/v1/tasks/stream`, NDJSON both ways; the agents")
        print("  \(streamClient == .nio ? "answer in their connection's NIO handler" : "use AsyncHTTPClient, a task each"))")
        let chainMS = try await measureAPI("chain of \(chain) steps", steps: chain, workflow: Self.chain(chain))
        let fanMS = try await measureAPI("fan-out 1 → \(width) → 1 (\(width + 2) steps)", steps: width + 2, workflow: Self.fanOut(width))
        print("  side by side, per step (peers measured on this machine, ../shared/peer-bench):")
        print(
            String(
                format: "    chain:   orl %.2f ms over HTTP, persisted; LangGraph 0.21 ms in memory (%.1f×); Dagster 9.4 ms", chainMS,
                chainMS / 0.21))
        print(
            String(
                format: "    fan-out: orl %.2f ms over HTTP, persisted; LangGraph 0.45 ms in memory (%.1f×); Dagster 9.4 ms", fanMS,
                fanMS / 0.45))
    }

    /// How an agent gets its tasks and answers them.
    enum Mode: String, CaseIterable, ExpressibleByArgument {
        /// A poll per task, then a completion.
        case poll
        /// The completion's answer carries the next task (`complete?next=0`).
        case carried
        /// Tasks pushed on one open request, answered on the same one.
        case stream

        var label: String {
            switch self {
            case .poll: "a poll per task:         "
            case .carried: "next with the completion:"
            case .stream: "pushed on a stream:      "
            }
        }
    }

    /// The HTTP client of the stream's agents.
    enum StreamClient: String, CaseIterable, ExpressibleByArgument {
        case nio
        case ahc
    }

    /// The median milliseconds per step of the fastest way.
    private func measureAPI(_ label: String, steps: Int, workflow: String) async throws -> Double {
        var perRun: [Mode: [Duration]] = [:]
        var cpu: [Mode: Duration] = [:]
        let modes = Mode.allCases.filter { self.modes.isEmpty || self.modes.contains($0) }
        for _ in 0..<runs {
            for mode in modes {
                let (wall, used) =
                    controller
                    ? try await driveThroughController(steps: steps, workflow: workflow, mode: mode)
                    : try await driveThroughAPI(steps: steps, workflow: workflow, mode: mode)
                perRun[mode, default: []].append(wall)
                cpu[mode, default: .zero] += used
            }
        }
        print(
            "  \(label), run start to last completion (CPU per step: \(controller ? "the controller's" : "the whole process, agents and server")):"
        )
        var result = Double.infinity
        for mode in modes {
            let times = perRun[mode, default: []].sorted()
            let median = Self.milliseconds(times[times.count / 2])
            print(
                String(
                    format: "    %@ %.1f ms (%.3f ms per step; min %.3f, max %.3f; CPU %.3f ms per step)", mode.label, median,
                    median / Double(steps), Self.milliseconds(times.first!) / Double(steps), Self.milliseconds(times.last!) / Double(steps),
                    Self.milliseconds(cpu[mode, default: .zero]) / Double(steps * runs)))
            if mode == .stream || modes.count == 1 { result = min(result, median / Double(steps)) }
        }
        return result
    }

    /// The CPU time this process used so far (user and system, every thread).
    static func processCPU() -> Duration {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func duration(_ time: timeval) -> Duration { .seconds(Int64(time.tv_sec)) + .microseconds(Int64(time.tv_usec)) }
        return duration(usage.ru_utime) + duration(usage.ru_stime)
    }

    /// The wall time from the run's start to its last completion, and the CPU time the
    /// process (agents and server) used meanwhile.
    private func driveThroughAPI(steps: Int, workflow: String, mode: Mode) async throws -> (Duration, Duration) {
        let directory = NSTemporaryDirectory() + "orl-bench-runs-api-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteStateStore(directory: directory)
        let report = ManifestValidation.validate([YAMLParser().parse(Self.fleet + workflow, file: "bench.yaml")])
        guard report.isValid else { throw ValidationError("the bench fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))") }
        let clock: @Sendable () -> Timestamp = {
            Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded()))
        }
        _ = try ApplyOperation.apply(report.fleet, to: store, options: ApplyOptions(source: "bench", appliedBy: "orl-bench"), now: clock())

        let worker = ResourceID(kind: "Agent", name: "worker")
        let token = "orl-bench-agent-token"
        let gateway = Gateway(store: store, providerKey: { _ in nil }, clock: clock, log: { _ in }, onExhausted: {})
        gateway.update(fleet: report.fleet, tokens: [worker: AgentToken.digest(token)], now: clock())
        let waiters = TaskWaiters()
        let apiStore = try SQLiteStateStore(directory: directory)
        let agentAPI = AgentAPI(
            gateway: gateway, store: apiStore, waiters: waiters, commands: ProcessRuntime(), secret: { _ in nil },
            changeMarker: { try? apiStore.changeMarker() }, configuration: AgentAPI.Configuration(stateDirectory: directory))
        let (url, server) = try await APIServer(gateway: gateway, agents: agentAPI, port: 0).start()
        defer { server.cancel() }

        let progress = Progress(steps: steps)
        let agentTasks = startAgents(url: url, token: token, progress: progress, mode: mode)
        // The agents are waiting in their polls when the run starts.
        try await Task.sleep(for: .milliseconds(300))
        let began = ContinuousClock.now
        let used = Self.processCPU()
        // As the controller's own writers do, the start announces the Ready steps.
        let run = try RunOperations(store: store, onReady: { waiters.notify($0) }).start(
            .init(workflow: ResourceID(kind: "Workflow", name: "bench"), by: "orl-bench"), now: clock(), random: 1)
        for task in agentTasks { try await task.value }
        guard let end = progress.end, let cpu = progress.cpu else { throw ValidationError("the agents stopped before the run ended") }
        let phase = try store.readRuns { reader throws(StoreError) in try reader.run(run.id)?.phase }
        guard phase == .succeeded else { throw ValidationError("the run ended \(phase?.rawValue ?? "nowhere")") }
        return (end - began, cpu - used)
    }

    /// The bench's agents, each on a connection of its own, getting tasks the way `mode` says.
    private func startAgents(url: String, token: String, progress: Progress, mode: Mode) -> [Task<Void, any Error>] {
        (0..<agents).map { _ in
            Task {
                if mode == .stream && streamClient == .nio {
                    try await NIOStreamAgent.run(url: url, token: token, progress: progress)
                } else if mode == .stream {
                    try await Self.streamingAgent(url: url, token: token, progress: progress)
                } else {
                    try await Self.agent(url: url, token: token, progress: progress, carried: mode == .carried)
                }
            }
        }
    }

    /// The same through a real `orlctl controller` on a state of its own: the agents
    /// stream or poll as above, with the token the controller gave its (sleeping) agent
    /// process, and the run is started from this process on the state, as `orlctl run`
    /// does (the controller learns of it through its change feed). Returns the wall time
    /// and the controller's CPU time from the run's start to its last completion; the
    /// agents' CPU (this process) is printed beside.
    private func driveThroughController(steps: Int, workflow: String, mode: Mode) async throws -> (Duration, Duration) {
        let binary = Orlctl.binary(orlctl)
        let root = NSTemporaryDirectory() + "orl-bench-runs-controller-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let state = root + "/state"
        let fleet = Self.fleet.replacingOccurrences(
            of: "runtime: {command: /bin/true}", with: #"runtime: {command: sleep, args: ["100000"]}"#)
        try (fleet + workflow).write(toFile: root + "/fleet.yaml", atomically: true, encoding: .utf8)
        try Orlctl.run(binary, ["apply", "-f", root + "/fleet.yaml", "--state", state, "--no-controller"], quiet: true)
        let controller = try await Orlctl.controller(binary, ["--state", state], directory: state, marker: root)
        defer { controller.stop() }
        let (url, token) = (controller.api, controller.token)

        let progress = Progress(steps: steps)
        let agentTasks = startAgents(url: url, token: token, progress: progress, mode: mode)
        try await Task.sleep(for: .milliseconds(300))
        let store = try SQLiteStateStore(directory: state)
        let clock: @Sendable () -> Timestamp = {
            Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded()))
        }
        let controllerBefore = GatewayBench.cpuMilliseconds(controller.process.processIdentifier)
        let began = ContinuousClock.now
        let used = Self.processCPU()
        let run = try RunOperations(store: store).start(
            .init(workflow: ResourceID(kind: "Workflow", name: "bench"), by: "orl-bench"), now: clock(), random: 1)
        for task in agentTasks { try await task.value }
        guard let end = progress.end, let cpu = progress.cpu else { throw ValidationError("the agents stopped before the run ended") }
        let controllerCPU = GatewayBench.cpuMilliseconds(controller.process.processIdentifier) - controllerBefore
        let phase = try store.readRuns { reader throws(StoreError) in try reader.run(run.id)?.phase }
        guard phase == .succeeded else { throw ValidationError("the run ended \(phase?.rawValue ?? "nowhere")") }
        print(
            String(
                format: "      %@ controller CPU %.3f ms per step (until the agents stopped), agents' %.3f ms per step", mode.rawValue,
                controllerCPU / Double(steps), Self.milliseconds(cpu - used) / Double(steps)))
        return (end - began, .microseconds(Int64(controllerCPU * 1000)))
    }

    /// Counts completions; the last one marks the end, and the process's CPU time then.
    final class Progress: Sendable {
        let steps: Int
        private let state = Mutex<(done: Int, end: ContinuousClock.Instant?, cpu: Duration?)>((0, nil, nil))

        init(steps: Int) { self.steps = steps }

        func completed() {
            state.withLock { state in
                state.done += 1
                if state.done == steps {
                    state.end = ContinuousClock.now
                    state.cpu = RunsBench.processCPU()
                }
            }
        }

        var end: ContinuousClock.Instant? { state.withLock { $0.end } }
        var cpu: Duration? { state.withLock { $0.cpu } }
    }

    /// One agent: polls for a task and completes it, until the run is done (then every
    /// agent stops once its poll returns). `carried`: each completion asks for the next
    /// task (`?next=0`), and the agent polls only when none came with it.
    private static func agent(url: String, token: String, progress: Progress, carried: Bool) async throws {
        let output = ByteBuffer(string: #"{"output": {"text": "done"}}"#)
        var next: Node?
        while progress.end == nil {
            let task: Node
            if let carried = next {
                task = carried
                next = nil
            } else {
                let (status, body) = try await post(url + "/v1/tasks/next?wait=1", token: token, body: nil)
                guard status == 200 else {
                    if status != 204 { throw ValidationError("polling answered \(status): \(String(buffer: body))") }
                    continue
                }
                task = try JSONParser.parse(bytes: Array(body.readableBytesView), file: "<task>")
            }
            guard let id = task["task"]?.string else { throw ValidationError("a task without its id: \(task)") }
            let (answered, said) = try await post(
                url + "/v1/tasks/\(id)/complete" + (carried ? "?next=0" : ""), token: token, body: output)
            guard answered == 200 else { throw ValidationError("completing \(id) answered \(answered): \(String(buffer: said))") }
            progress.completed()
            if carried, let following = try JSONParser.parse(bytes: Array(said.readableBytesView), file: "<answer>")["next"],
                following.members != nil
            {
                next = following
            }
        }
    }

    /// One agent on `/v1/tasks/stream`: answers each task pushed with a completion line,
    /// and opens another stream when one ends (none came in time), until the run is done.
    private static func streamingAgent(url: String, token: String, progress: Progress) async throws {
        while progress.end == nil {
            let (answers, send) = AsyncStream<ByteBuffer>.makeStream()
            defer { send.finish() }
            var request = HTTPClientRequest(url: url + "/v1/tasks/stream?wait=1")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Content-Type", value: "application/x-ndjson")
            request.body = .stream(answers, length: .unknown)
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            guard response.status == .ok else {
                throw ValidationError(
                    "the stream answered \(response.status.code): \(String(buffer: try await response.body.collect(upTo: 1 << 20)))")
            }
            var pending = ByteBuffer()
            for try await var chunk in response.body {
                pending.writeBuffer(&chunk)
                while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                    let view = pending.readableBytesView
                    let line = Array(view[view.startIndex..<newline])
                    pending.moveReaderIndex(forwardBy: newline - view.startIndex + 1)
                    let message = try JSONParser.parse(bytes: line, file: "<stream>")
                    if message["error"] != nil { throw ValidationError("the stream refused: \(String(decoding: line, as: UTF8.self))") }
                    if message["state"] != nil { progress.completed() }
                    if let next = message["next"], next.members != nil {
                        guard let id = next["task"]?.string else { throw ValidationError("a task without its id: \(next)") }
                        send.yield(ByteBuffer(string: #"{"task": ""# + id + #"", "output": {"text": "done"}}"# + "\n"))
                    }
                }
            }
        }
    }

    private static func post(_ url: String, token: String, body: ByteBuffer?) async throws -> (Int, ByteBuffer) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), try await response.body.collect(upTo: 1 << 20))
    }
}
