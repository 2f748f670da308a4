import ArgumentParser
import Foundation

/// One node's gateway on each backend: `orlctl controller` on a SQLite state (its meter
/// alone reserves) and on a PostgreSQL state (every call also reserved in the database by a
/// conditional UPDATE, so that budgets hold across nodes), wrk posting simulated chat
/// completions with the agent's token, the two measured alternately in one run.
struct GatewayBackendsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway-backends",
        abstract: "Gateway requests/s of one node with the PostgreSQL budget reservation, beside SQLite's.",
        discussion: "Needs wrk and an empty PostgreSQL database (--state postgres://…)."
    )

    @Option(help: "The PostgreSQL state (an empty database).")
    var state: String

    @Option(help: "Seconds per wrk run.")
    var duration = 10

    @Option(help: "Connection counts to run, comma-separated.")
    var connections = "1,32"

    @Option(help: "Rounds (each measures SQLite then PostgreSQL).")
    var rounds = 2

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    func run() async throws {
        let binary = Orlctl.binary(orlctl)
        guard let wrk = GatewayBench.which("wrk") else { throw ValidationError("wrk is not installed: apt-get install wrk") }
        let root = NSTemporaryDirectory() + "orl-bench-backends-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try GatewayBench.fleet(upstream: "http://127.0.0.1:9/v1").write(toFile: root + "/fleet.yaml", atomically: true, encoding: .utf8)
        try GatewayBench.script.write(toFile: root + "/post.lua", atomically: true, encoding: .utf8)

        struct Node {
            var name: String
            var directory: String
            var controller: Orlctl.Controller
        }
        var nodes: [Node] = []
        defer {
            for node in nodes { node.controller.stop() }
        }
        for (name, postgres) in [("SQLite", false), ("PostgreSQL", true)] {
            let directory = root + "/" + name
            let stateArguments = postgres ? ["--state", state] : ["--state", directory]
            try Orlctl.run(binary, ["apply", "-f", root + "/fleet.yaml", "--no-controller", "--force-conflicts"] + stateArguments)
            let controller = try await Orlctl.controller(
                binary, postgres ? ["--state", state, "--data-dir", directory] : ["--state", directory], directory: directory,
                marker: directory, seconds: 20)
            nodes.append(Node(name: name, directory: directory, controller: controller))
        }

        print("gateway of one node, simulated provider, halting budget; wrk \(duration) s per run, backends alternated")
        print("state                conns      req/s     p50 ms     p99 ms   CPU ms/req (controller)  non-2xx")
        for connections in connections.split(separator: ",").compactMap({ Int($0) }) {
            for _ in 0..<rounds {
                for node in nodes {
                    let before = GatewayBench.cpuMilliseconds(node.controller.process.processIdentifier)
                    let figures = try GatewayBench.wrk(
                        wrk, root: root, url: node.controller.api + "/v1/chat/completions", key: node.controller.token,
                        connections: connections,
                        seconds: duration, model: "sim/gpt-4o-mini")
                    let cpu =
                        (GatewayBench.cpuMilliseconds(node.controller.process.processIdentifier) - before)
                        / Double(max(figures.requests, 1))
                    print(
                        node.name.padding(toLength: 20, withPad: " ", startingAt: 0)
                            + String(
                                format: " %5d %10.0f %10.3f %10.3f   %8.3f                 %d", connections, figures.rps, figures.p50,
                                figures.p99, cpu, figures.non2xx))
                }
            }
        }
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ")
        print("load average: \(load ?? "?")")
    }
}
