import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import OrlCore
import OrlServer
import OrlStore
import OrlYAML
import Synchronization

/// What metrics and traces cost: a `/metrics` scrape of a big state (100 agents, 100,000
/// ledger rows, thousands of run steps) over HTTP, and the gateway's throughput with
/// metrics and tracing on next to off, served in process (the only difference between
/// the two is the `Telemetry` the gateway gets), loaded by concurrent clients.
struct ObservabilityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "observability",
        abstract: "Time a /metrics scrape of a big state, and the gateway with metrics and tracing on and off.",
        discussion: "Targets: a scrape under 10 ms; the gateway's throughput with both on less than 10% below off."
    )

    @Option(help: "Agents in the state.")
    var agents = 100

    @Option(help: "Ledger rows in the state.")
    var ledgerRows = 100_000

    @Option(help: "Runs (of 3 steps) in the state.")
    var runs = 1000

    @Option(help: "Scrapes to time.")
    var scrapes = 200

    @Option(help: "Seconds per gateway load round (off and on alternate, three rounds each).")
    var seconds = 4

    @Option(help: "Concurrent clients of the gateway.")
    var connections = 16

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    enum Part: String, ExpressibleByArgument { case all, scrape, gateway }

    @Option(help: "What to measure: all, scrape (the big state) or gateway (throughput, on a small state).")
    var part: Part = .all

    func run() async throws {
        let root = NSTemporaryDirectory() + "orl-bench-observability-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (upstreamURL, upstream) = try await GatewayBench.startUpstream()
        defer { upstream.cancel() }
        let (sinkURL, sink, received) = try await Self.startTraceSink()
        defer { sink.cancel() }

        let yaml = Self.fleet(agents: agents, upstream: upstreamURL)
        let fleet = ManifestValidation.validate([YAMLParser().parse(yaml, file: "fleet.yaml")], strict: false).fleet
        let started = ContinuousClock.now
        try yaml.write(toFile: root + "/fleet.yaml", atomically: true, encoding: .utf8)
        try Orlctl.run(Orlctl.binary(orlctl), ["apply", "-f", root + "/fleet.yaml", "--state", root + "/state", "--no-controller"])
        let store = try SQLiteStateStore(directory: root + "/state")
        if part != .gateway {
            try Self.fill(store, agents: agents, ledgerRows: ledgerRows, runs: runs)
            print(
                "observability: state of \(agents) agents, \(ledgerRows) ledger rows, \(runs * 3) run steps (filled in \(started.duration(to: .now)))"
            )
            try await scrape(store: store, fleet: fleet)
        }
        if part != .scrape { try await throughput(store: store, fleet: fleet, sinkURL: sinkURL, received: received) }
    }

    // MARK: Scrape

    func scrape(store: SQLiteStateStore, fleet: Fleet) async throws {
        let metrics = Metrics()
        // The counters a day of traffic leaves: every agent on two models, a histogram
        // sample per call.
        for call in 0..<ledgerRows {
            let agent = "agent-\(call % agents)"
            let model = call % 3 == 0 ? "up/gpt-4o" : "up/gpt-4o-mini"
            let base = ["chat", "openai", model, "default", agent]
            metrics.record { r in
                r.observe(Metrics.tokenUsage, base + ["input"], Double(200 + call % 1000))
                r.observe(Metrics.tokenUsage, base + ["output"], Double(50 + call % 300))
                r.observe(Metrics.operationDuration, base + [""], 0.2 + Double(call % 50) / 10)
                r.add(Metrics.costUSD, ["default", agent, model], 0.0001)
                r.add(Metrics.tokens, ["default", agent, model, "input"], 200)
                r.add(Metrics.tokens, ["default", agent, model, "output"], 50)
                r.add(Metrics.modelCalls, ["default", agent, model, "ok"])
            }
        }
        let telemetry = Telemetry(metrics: metrics, gauges: { () throws(StoreError) in try store.fleetGauges() })
        let gateway = Self.gateway(store: store, fleet: fleet, telemetry: telemetry)
        let (url, server) = try await MetricsServer(gateway: gateway, host: "127.0.0.1", port: 0).start()
        defer { server.cancel() }

        var inProcess: [Double] = []
        var size = 0
        let inProcessCPU = processCPUMilliseconds()
        for _ in 0..<scrapes {
            let begin = ContinuousClock.now
            size = telemetry.exposition(budgets: gateway.budgetStatus(now: Self.now())).utf8.count
            inProcess.append(milliseconds(begin.duration(to: .now)))
        }
        let inProcessCPUPerScrape = (processCPUMilliseconds() - inProcessCPU) / Double(scrapes)
        var overHTTP: [Double] = []
        let httpCPU = processCPUMilliseconds()
        for _ in 0..<scrapes {
            let begin = ContinuousClock.now
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url + "/metrics"), timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 64 << 20)
            overHTTP.append(milliseconds(begin.duration(to: .now)))
            guard response.status == .ok, body.readableBytes > 0 else { throw ValidationError("the scrape failed: \(response.status)") }
        }
        let httpCPUPerScrape = (processCPUMilliseconds() - httpCPU) / Double(scrapes)
        // CPU time beside wall time: on a shared machine the wall time also counts the
        // time other processes held the cores.
        print("scrape                        p50 ms     p99 ms   CPU ms/scrape     bytes   (target: under 10 ms)")
        print(
            String(
                format: "exposition, in process    %10.3f %10.3f %15.3f %9d", percentile(inProcess, 50), percentile(inProcess, 99),
                inProcessCPUPerScrape, size))
        print(
            String(
                format: "GET /metrics over HTTP    %10.3f %10.3f %15.3f %9d", percentile(overHTTP, 50), percentile(overHTTP, 99),
                httpCPUPerScrape, size))
    }

    // MARK: Throughput

    func throughput(store: SQLiteStateStore, fleet: Fleet, sinkURL: String, received: Counter) async throws {
        let off = Self.gateway(store: store, fleet: fleet, telemetry: .off)
        var tracing = Tracer.Configuration(endpoint: sinkURL)
        tracing.interval = .milliseconds(1000)
        let tracer = Tracer(configuration: tracing)
        let on = Self.gateway(
            store: store, fleet: fleet,
            telemetry: Telemetry(metrics: Metrics(), tracer: tracer, gauges: { () throws(StoreError) in try store.fleetGauges() }))
        let offServer = try await APIServer(gateway: off, port: 0).start()
        let onServer = try await APIServer(gateway: on, port: 0).start()
        defer {
            offServer.task.cancel()
            onServer.task.cancel()
        }
        let token = Self.token(0)
        print(
            "gateway, in process, \(connections) clients, \(seconds) s rounds   req/s off    req/s on   on/off   CPU µs/req off   CPU µs/req on"
        )
        for (name, model) in [("gateway → upstream", "up/gpt-4o-mini"), ("gateway, simulated", "sim/gpt-4o-mini")] {
            var offRates: [Double] = []
            var onRates: [Double] = []
            var offCPU: [Double] = []
            var onCPU: [Double] = []
            for _ in 0..<3 {
                var cpu = processCPUMilliseconds()
                var (rate, requests) = try await load(offServer.url, token: token, model: model)
                offRates.append(rate)
                offCPU.append((processCPUMilliseconds() - cpu) * 1000 / Double(max(requests, 1)))
                cpu = processCPUMilliseconds()
                (rate, requests) = try await load(onServer.url, token: token, model: model)
                onRates.append(rate)
                onCPU.append((processCPUMilliseconds() - cpu) * 1000 / Double(max(requests, 1)))
            }
            let offRate = percentile(offRates, 50)
            let onRate = percentile(onRates, 50)
            print(
                name.padding(toLength: 54, withPad: " ", startingAt: 0)
                    + String(
                        format: "%10.0f %10.0f %7.1f%% %16.1f %15.1f", offRate, onRate, onRate / offRate * 100, percentile(offCPU, 50),
                        percentile(onCPU, 50)))
        }
        await tracer.flush()
        let counts = tracer.counts
        print(
            "spans exported \(counts.exported) (\(received.value) bytes received by the sink, \(counts.dropped) dropped); target: on at most 10% below off"
        )
    }

    /// Requests per second of `connections` clients posting chat completions for `seconds`.
    func load(_ url: String, token: String, model: String) async throws -> (rate: Double, requests: Int) {
        let body = #"{"model":"\#(model)","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}"#
        let deadline = ContinuousClock.now + .seconds(seconds)
        let begin = ContinuousClock.now
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<connections {
                group.addTask {
                    var done = 0
                    while ContinuousClock.now < deadline {
                        var request = HTTPClientRequest(url: url + "/v1/chat/completions")
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Bearer \(token)")
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.body = .bytes(ByteBuffer(string: body))
                        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                        _ = try await response.body.collect(upTo: 1 << 20)
                        guard response.status == .ok else { throw ValidationError("the gateway answered \(response.status)") }
                        done += 1
                    }
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        return (Double(total) / milliseconds(begin.duration(to: .now)) * 1000, total)
    }

    // MARK: The state

    static func now() -> Timestamp { Timestamp(milliseconds: Int64(Date().timeIntervalSince1970 * 1000)) }

    static func token(_ agent: Int) -> String { "orl-bench-token-\(agent)" }

    static func gateway(store: SQLiteStateStore, fleet: Fleet, telemetry: Telemetry) -> Gateway {
        let gateway = Gateway(
            store: store, providerKey: { _ in nil }, clock: { Self.now() }, log: { _ in }, onExhausted: {}, telemetry: telemetry)
        var tokens: [ResourceID: String] = [:]
        for resource in fleet.resources where resource.kind == .agent {
            tokens[resource.id] = AgentToken.digest(token(Int(resource.id.name.dropFirst("agent-".count)) ?? 0))
        }
        gateway.update(fleet: fleet, tokens: tokens, now: now())
        return gateway
    }

    static func fleet(agents: Int, upstream: String) -> String {
        var yaml = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: up}
            spec:
              apiStyle: openai
              baseURL: \(upstream)
              models:
                - {name: gpt-4o-mini, maxOutputTokens: 16384, pricing: {input: 0.15, output: 0.6}}
                - {name: gpt-4o, maxOutputTokens: 16384, pricing: {input: 2.5, output: 10}}
            ---
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: gpt-4o-mini, maxOutputTokens: 16384, pricing: {input: 0.15, output: 0.6}}]
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: bench}
            spec:
              appliesTo: {selector: {matchLabels: {bench: observability}}}
              allow: {models: ["*"], handoffs: ["*"]}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: shared}
            spec:
              appliesTo: {selector: {matchLabels: {bench: observability}}}
              limits: [{window: day, usd: 1000000, tokens: 100000000000}, {window: month, usd: 10000000}]
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: each}
            spec:
              appliesTo: {selector: {matchLabels: {bench: observability}}}
              scope: perAgent
              limits: [{window: day, usd: 100000}]
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: chain}
            spec:
              steps:
                - {id: a, agent: agent-0, prompt: one}
                - {id: b, agent: agent-1, prompt: two, dependsOn: [a]}
                - {id: c, agent: agent-2, prompt: three, dependsOn: [b]}

            """
        for index in 0..<agents {
            yaml += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: agent-\(index), labels: {bench: observability}}
                spec:
                  model: up/gpt-4o-mini
                  runtime: {command: sleep, args: ["100000"]}

                """
        }
        return yaml
    }

    /// The resources as `apply` stores them, each agent Running with restarts, the
    /// ledger, and runs with their steps.
    static func fill(_ store: SQLiteStateStore, agents: Int, ledgerRows: Int, runs: Int) throws {
        let now = now()
        try store.write { writer throws(StoreError) in
            for index in 0..<agents {
                let id = ResourceID(kind: "Agent", namespace: "default", name: "agent-\(index)")
                try writer.putStatus(
                    ResourceStatus(
                        conditions: [.init(type: ResourceStatus.ready, status: .true, reason: "Running", message: "Running: pid 1")],
                        observedGeneration: 1, updatedAt: now), for: id)
                try writer.putSupervision(SupervisionRecord(agent: id, restarts: 2, crashes: 1))
            }
        }
        let batch = 10_000
        for start in stride(from: 0, to: ledgerRows, by: batch) {
            let entries = (start..<min(start + batch, ledgerRows)).map { call in
                LedgerEntry(
                    time: Timestamp(milliseconds: now.milliseconds - Int64(ledgerRows - call) * 100),
                    agent: ResourceID(kind: "Agent", namespace: "default", name: "agent-\(call % agents)"),
                    model: call % 3 == 0 ? "up/gpt-4o" : "up/gpt-4o-mini", usage: TokenUsage(prompt: 200, completion: 50), usd: 0.0001,
                    latencyMilliseconds: 300, requestID: "bench-\(call)", outcome: "ok")
            }
            try store.write { writer throws(StoreError) in try writer.append(entries) }
        }
        let operations = RunOperations(store: store)
        for index in 0..<runs {
            _ = try operations.start(
                .init(workflow: ResourceID(kind: "Workflow", namespace: "default", name: "chain"), by: "bench"), now: now,
                random: UInt32(index))
        }
    }

    // MARK: The trace sink

    final class Counter: Sendable {
        let count = Mutex(0)
        var value: Int { count.withLock { $0 } }
    }

    /// An OTLP/HTTP endpoint that takes every export and counts the bytes.
    static func startTraceSink() async throws -> (String, Task<Void, any Error>, Counter) {
        let counter = Counter()
        let router = Router()
        router.post("/v1/traces") { request, _ in
            var request = request
            let body = try await request.collectBody(upTo: 64 << 20)
            counter.count.withLock { $0 += body.readableBytes }
            return Response(status: .ok)
        }
        let (urls, continuation) = AsyncStream<String>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield("http://127.0.0.1:\($0.localAddress?.port ?? 0)/v1/traces") })
        let task = Task { try await app.run() }
        for await url in urls { return (url, task, counter) }
        throw ValidationError("the trace sink did not start")
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p / 100 + 0.5))]
}

/// CPU time this process has used (every thread: the servers and the clients).
func processCPUMilliseconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1000
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}
