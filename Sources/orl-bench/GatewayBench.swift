import ArgumentParser
import Foundation
import Hummingbird
import NIOCore

/// The gateway under load, as operators run it: `orlctl controller` serving an agent,
/// wrk posting chat completions with the agent's own token. The same wrk run against
/// the upstream directly gives what the gateway adds.
struct GatewayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Load the model gateway with wrk: requests/s, latency, and what it adds over the upstream.",
        discussion: """
            Needs wrk (apt-get install wrk). The upstream is an OpenAI-compatible server this \
            command starts in process (fixed reply and usage), unless --upstream names another \
            (e.g. ../shared/peer-bench/fake_upstream.py, the one LiteLLM was measured behind).
            """
    )

    @Option(help: "Seconds per wrk run.")
    var duration = 10

    @Option(help: "Connection counts to run, comma-separated.")
    var connections = "1,32"

    @Option(help: "An OpenAI-compatible base URL (…/v1) to forward to instead of the built-in one.")
    var upstream: String?

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    func run() async throws {
        let binary = Orlctl.binary(orlctl)
        guard let wrk = Self.which("wrk") else { throw ValidationError("wrk is not installed: apt-get install wrk") }
        let root = NSTemporaryDirectory() + "orl-bench-gateway-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }

        var server: Task<Void, any Error>?
        let upstreamURL: String
        if let upstream {
            upstreamURL = upstream
        } else {
            let (url, task) = try await Self.startUpstream()
            upstreamURL = url
            server = task
        }
        defer { server?.cancel() }

        let state = root + "/state"
        try Self.fleet(upstream: upstreamURL).write(toFile: root + "/fleet.yaml", atomically: true, encoding: .utf8)
        try Self.script.write(toFile: root + "/post.lua", atomically: true, encoding: .utf8)
        try Orlctl.run(binary, ["apply", "-f", root + "/fleet.yaml", "--state", state, "--no-controller"])
        let controller = try await Orlctl.controller(binary, ["--state", state], directory: state, marker: root)
        defer { controller.stop() }
        let (api, token) = (controller.api, controller.token)

        print("gateway: orlctl controller in front of \(upstream == nil ? "a built-in upstream" : upstreamURL); wrk \(duration) s per run")
        print("target               conns      req/s     p50 ms     p99 ms   CPU ms/req (controller)")
        for connections in connections.split(separator: ",").compactMap({ Int($0) }) {
            let direct = try Self.wrk(
                wrk, root: root, url: upstreamURL + "/chat/completions", key: "none", connections: connections, seconds: duration)
            Self.report("upstream direct", connections, direct, cpu: nil)
            let before = Self.cpuMilliseconds(controller.process.processIdentifier)
            let via = try Self.wrk(
                wrk, root: root, url: api + "/v1/chat/completions", key: token, connections: connections, seconds: duration)
            let cpu = (Self.cpuMilliseconds(controller.process.processIdentifier) - before) / Double(max(via.requests, 1))
            Self.report("gateway → upstream", connections, via, cpu: cpu)
            let simulated = try Self.wrk(
                wrk, root: root, url: api + "/v1/chat/completions", key: token, connections: connections, seconds: duration,
                model: "sim/gpt-4o-mini")
            Self.report("gateway, simulated", connections, simulated, cpu: nil)
            for (name, path, body) in Self.otherAPIs {
                let figures = try Self.wrk(
                    wrk, root: root, url: api + path, key: token, connections: connections, seconds: duration, body: body)
                Self.report(name, connections, figures, cpu: nil)
                if figures.non2xx > 0 { print("  non-2xx: \(figures.non2xx)") }
            }
            print(
                String(
                    format: "  added by the gateway at %d conn: p50 %+.3f ms, p99 %+.3f ms; throughput %.0f%% of direct", connections,
                    via.p50 - direct.p50, via.p99 - direct.p99, via.rps / direct.rps * 100))
            if via.non2xx > 0 || direct.non2xx > 0 { print("  non-2xx: direct \(direct.non2xx), gateway \(via.non2xx)") }
        }
        print(
            "peer (../shared/peer-bench, this machine): LiteLLM proxy 43-45 req/s, p50 23 ms at 1 connection; aiohttp baseline 2,042 req/s")
    }

    struct Figures {
        var requests: Int
        var rps: Double
        var p50: Double
        var p99: Double
        var max: Double = 0
        var non2xx: Int
    }

    static func report(_ name: String, _ connections: Int, _ f: Figures, cpu: Double?) {
        print(
            name.padding(toLength: 20, withPad: " ", startingAt: 0)
                + String(
                    format: " %5d %10.0f %10.3f %10.3f   %@", connections, f.rps, f.p50, f.p99,
                    cpu.map { String(format: "%.3f", $0) } ?? "-"))
    }

    static func wrk(
        _ wrk: String, root: String, url: String, key: String, connections: Int, seconds: Int, model: String = "up/gpt-4o-mini",
        body: String? = nil
    ) throws -> Figures {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: wrk)
        process.arguments = ["-t1", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", root + "/post.lua", url]
        process.environment = [
            "BENCH_KEY": key,
            "BENCH_BODY": body
                ?? #"{"model":"\#(model)","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}"#,
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("JSON ") }),
            let json = try JSONSerialization.jsonObject(with: Data(line.dropFirst(5).utf8)) as? [String: Any]
        else { throw ValidationError("wrk printed no figures:\n\(output)") }
        return Figures(
            requests: json["requests"] as? Int ?? 0, rps: json["rps"] as? Double ?? 0, p50: json["p50_ms"] as? Double ?? 0,
            p99: json["p99_ms"] as? Double ?? 0, max: json["max_ms"] as? Double ?? 0, non2xx: json["non2xx"] as? Int ?? 0)
    }

    /// The Responses and Messages APIs on the simulated provider, beside its chat completions.
    static let otherAPIs = [
        (
            "responses, simulated", "/v1/responses",
            #"{"model":"sim/gpt-4o-mini","input":"Say hello in five words.","max_output_tokens":16}"#
        ),
        (
            "messages, simulated", "/v1/messages",
            #"{"model":"sim/gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hello in five words."}]}"#
        ),
    ]

    /// What wrk posts (by default the request peer-bench posts to LiteLLM).
    static let script = """
        wrk.method = "POST"
        wrk.body = os.getenv("BENCH_BODY")
        wrk.headers["Content-Type"] = "application/json"
        wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
        local bad = 0
        response = function(status, headers, body) if status ~= 200 then bad = bad + 1 end end
        done = function(summary, latency, requests)
          io.write(string.format("JSON {\\"requests\\":%d,\\"rps\\":%.1f,\\"p50_ms\\":%.3f,\\"p99_ms\\":%.3f,\\"max_ms\\":%.3f,\\"non2xx\\":%d}\\n",
            summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50)/1000,
            latency:percentile(99)/1000, latency.max/1000, summary.errors.status))
        end
        """

    static func fleet(upstream: String) -> String {
        """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: up}
        spec:
          apiStyle: openai
          baseURL: \(upstream)
          models: [{name: gpt-4o-mini, maxOutputTokens: 16384, pricing: {input: 0.15, output: 0.6}}]
        ---
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: gpt-4o-mini, maxOutputTokens: 16384, pricing: {input: 0.15, output: 0.6}}]
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: bench, labels: {bench: gateway}}
        spec:
          model: up/gpt-4o-mini
          runtime: {command: sleep, args: ["100000"]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: bench}
        spec:
          appliesTo: {agents: [bench]}
          allow: {models: ["*"]}
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: bench}
        spec:
          appliesTo: {agents: [bench]}
          limits: [{window: day, usd: 1000000}]
        """
    }

    /// OPENAI_API_KEY of the bench's agent process (found by its working directory).
    static func agentToken(marker root: String) -> String? {
        guard let pids = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for pid in pids where Int(pid) != nil {
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"), cwd.hasPrefix(root)
            else { continue }
            for entry in String(decoding: environ, as: UTF8.self).split(separator: "\0") where entry.hasPrefix("OPENAI_API_KEY=") {
                return String(entry.dropFirst("OPENAI_API_KEY=".count))
            }
        }
        return nil
    }

    static func cpuMilliseconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks * 1000 / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// How long the process's event loop threads (SwiftNIO's, named `NIO-…`) have been
    /// ready to run but waiting for a CPU, in milliseconds (the second field of each
    /// thread's schedstat): over a run, it tells a call held up by the machine's load
    /// from one waiting on something else (a lock, the store), during which the loop
    /// sleeps instead.
    static func loopWaitMilliseconds(_ pid: Int32) -> Double {
        guard let threads = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return 0 }
        var nanoseconds = 0.0
        for thread in threads {
            let base = "/proc/\(pid)/task/\(thread)/"
            guard let name = try? String(contentsOfFile: base + "comm", encoding: .utf8), name.hasPrefix("NIO-"),
                let schedstat = try? String(contentsOfFile: base + "schedstat", encoding: .utf8)
            else { continue }
            let fields = schedstat.split(separator: " ")
            if fields.count > 1, let waited = Double(fields[1]) { nanoseconds += waited }
        }
        return nanoseconds / 1e6
    }

    static func which(_ name: String) -> String? {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
        where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        return nil
    }

    /// A fixed chat.completion with usage, like peer-bench's fake upstream, served by
    /// Hummingbird on its own event loops.
    static func startUpstream() async throws -> (String, Task<Void, any Error>) {
        let reply = ByteBuffer(
            string:
                #"{"id":"chatcmpl-fake0001","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fake upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#
        )
        let router = Router()
        router.post("/v1/chat/completions") { request, _ in
            var request = request
            _ = try await request.collectBody(upTo: 1 << 20)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: reply))
        }
        let (urls, continuation) = AsyncStream<String>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield("http://127.0.0.1:\($0.localAddress?.port ?? 0)/v1") })
        let task = Task { try await app.run() }
        for await url in urls { return (url, task) }
        throw CancellationError()
    }
}
