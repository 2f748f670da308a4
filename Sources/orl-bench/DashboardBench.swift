import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrlCore
import OrlServer
import OrlStore
import OrlYAML

/// `orl-bench dashboard`: how long the dashboard's pages take over HTTP on loopback with
/// a fleet of `--agents` agents, their ledger, runs waiting for approval and events, as
/// the controller serves them (a session from the login form, a connection of its own to
/// the state). The target: a page under 100 ms.
struct DashboardBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard", abstract: "Time the dashboard's pages with a fleet of agents (target: under 100 ms a page).")

    @Option(help: "Agents in the fleet.") var agents = 100
    @Option(help: "Ledger rows (model calls) spread over two weeks.") var ledger = 100_000
    @Option(help: "Runs, each waiting at an approval gate.") var runs = 50
    @Option(help: "Requests per page.") var requests = 50

    func run() async throws {
        let directory = NSTemporaryDirectory() + "orl-bench-dashboard-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteStateStore(directory: directory)
        var yaml = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 0.1, output: 0.1}}]}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: daily}
            spec: {appliesTo: {selector: {matchLabels: {fleet: bench}}}, scope: perAgent, limits: [{window: day, usd: 5}]}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: bench}
            spec: {appliesTo: {selector: {matchLabels: {fleet: bench}}}, allow: {models: ["sim/*"]}}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: gated}
            spec: {steps: [{id: gate, approval: {message: ok?, timeout: 30h}}]}

            """
        for i in 0..<agents {
            yaml += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: agent-\(i), labels: {fleet: bench}}
                spec: {model: sim/small, runtime: {command: /bin/true}}

                """
        }
        let report = ManifestValidation.validate([YAMLParser().parse(yaml, file: "bench.yaml")])
        guard report.isValid else { throw ValidationError("the bench fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))") }
        let clock: @Sendable () -> Timestamp = { Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded())) }
        let now = clock()
        _ = try ApplyOperation.apply(report.fleet, to: store, options: ApplyOptions(source: "bench", appliedBy: "orl-bench"), now: now)
        let fortnight: Int64 = 14 * 86_400_000
        try store.write { writer throws(StoreError) in
            var batch: [LedgerEntry] = []
            for n in 0..<ledger {
                batch.append(
                    LedgerEntry(
                        time: Timestamp(milliseconds: now.milliseconds - fortnight + Int64(n) * fortnight / Int64(max(ledger, 1))),
                        agent: ResourceID(kind: "Agent", name: "agent-\(n % agents)"), model: "sim/small",
                        usage: TokenUsage(prompt: 100, completion: 50), usd: 0.0001, latencyMilliseconds: 20, requestID: "r\(n)",
                        outcome: "ok"))
                if batch.count == 5000 {
                    try writer.append(batch)
                    batch = []
                }
            }
            try writer.append(batch)
        }
        let operations = RunOperations(store: store)
        var lastRun = ""
        for i in 0..<runs {
            lastRun = try operations.start(
                .init(workflow: ResourceID(kind: "Workflow", name: "gated"), by: "orl-bench"), now: now, random: UInt32(i + 1)
            )
            .id.rawValue
        }

        let gateway = Gateway(store: store, providerKey: { _ in nil }, clock: clock, log: { _ in }, onExhausted: {})
        gateway.update(fleet: report.fleet, tokens: [:], now: now)
        let token = "orl-bench-operator-token"
        let dashboardStore = try SQLiteStateStore(directory: directory)
        let dashboard = Dashboard(store: dashboardStore, adminToken: token, budgets: { gateway.budgetStatus(now: $0) }, clock: clock)
        let (url, server) = try await APIServer(gateway: gateway, port: 0, adminToken: token, dashboard: dashboard).start()
        defer { server.cancel() }

        // The login answers 303 with the cookie: not to be followed.
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        defer { _ = client.shutdown() }
        var login = HTTPClientRequest(url: url + "/ui/login")
        login.method = .POST
        login.headers.add(name: "Origin", value: url)
        login.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        login.body = .bytes(ByteBuffer(string: "token=\(token)"))
        let answer = try await client.execute(login, timeout: .seconds(10))
        guard let setCookie = answer.headers.first(name: "set-cookie"), let cookie = setCookie.split(separator: ";").first else {
            throw ValidationError("the login set no cookie (\(answer.status))")
        }
        print(
            "dashboard: \(agents) agents, \(ledger) ledger rows, \(runs) runs waiting for approval; \(requests) requests a page over loopback HTTP"
        )
        var worst = 0.0
        for page in ["/ui", "/ui/agents/default/agent-0", "/ui/runs", "/ui/runs/\(lastRun)", "/ui/budgets", "/ui/events", "/ui/sources"] {
            var times: [Double] = []
            var bytes = 0
            for _ in 0..<requests {
                var request = HTTPClientRequest(url: url + page)
                request.headers.add(name: "Cookie", value: String(cookie))
                let began = ContinuousClock.now
                let response = try await client.execute(request, timeout: .seconds(30))
                let body = try await response.body.collect(upTo: 64 << 20)
                let took = ContinuousClock.now - began
                guard response.status == .ok else { throw ValidationError("\(page) answered \(response.status)") }
                bytes = body.readableBytes
                times.append(Double(took.components.attoseconds) / 1e15 + Double(took.components.seconds) * 1000)
            }
            times.sort()
            let median = times[times.count / 2]
            let p95 = times[min(times.count - 1, times.count * 95 / 100)]
            worst = max(worst, p95)
            print(String(format: "  %-34@ median %6.2f ms  p95 %6.2f ms  (%d KB)", page as NSString, median, p95, bytes / 1024))
        }
        print(String(format: "  worst p95 %.2f ms; target under 100 ms: %@", worst, worst < 100 ? "met" : "NOT met"))
    }
}
