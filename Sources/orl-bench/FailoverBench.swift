import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Failover of controller nodes: several `orlctl controller --node` processes on one state,
/// agents spread over them; each round `kill -9` of the node with the most agents, and the
/// time until every one of its agents runs again on another node (agents counted by their
/// `ORL_AGENT` in /proc every 5 ms, as the tests do; an agent seen twice at once fails the
/// bench). The killed node is started again (it registers under a new generation and takes
/// no agent back) before the next round.
struct FailoverBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "kill -9 of a controller node, N times: time until its agents run on the other nodes (min/median/max)."
    )

    @Option(
        help: "The state: postgres://… (each node then gets a data directory of its own), or a directory; a new SQLite state when absent.")
    var state: String?

    @Option(help: "How many nodes.")
    var nodes = 3

    @Option(help: "How many agents (each a `sleep` process).")
    var agents = 6

    @Option(help: "How many kills.")
    var rounds = 5

    @Option(help: "The orlctl binary (default: the one next to orl-bench).")
    var orlctl: String?

    struct Sample {
        var at: Double
        var counts: [String: Int]
    }

    func run() throws {
        let binary = Orlctl.binary(orlctl)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("orl-failover-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let postgres = state?.hasPrefix("postgres") ?? false
        let location = state ?? work.appendingPathComponent("state").path
        // Where the agents work: the SQLite state's directory, or the nodes' data directories.
        let root = postgres ? work.path : URL(fileURLWithPath: location).standardizedFileURL.path
        let names = (1...nodes).map { "n\($0)" }
        var processes: [String: Process] = [:]
        func start(_ name: String) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments =
                ["controller", "--state", location, "--node", name]
                + (postgres ? ["--data-dir", work.appendingPathComponent(name).path] : [])
            process.currentDirectoryURL = work
            let log = work.appendingPathComponent("\(name).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try process.run()
            processes[name] = process
        }
        defer {
            for process in processes.values where process.isRunning { process.terminate() }
            for process in processes.values { process.waitUntilExit() }
            for pid in Self.agentProcesses(under: root) { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(at: work)
        }
        let load = Self.loadAverage()
        for name in names { try start(name) }
        guard wait(seconds: 60, until: { ((try? nodeStatus(binary, location))?.values.filter(\.live).count ?? 0) == nodes }) else {
            throw ValidationError("the nodes did not all register within a minute (logs in \(work.path))")
        }
        try fleet().write(toFile: work.appendingPathComponent("fleet.yaml").path, atomically: true, encoding: .utf8)
        try Orlctl.run(binary, ["apply", "-f", work.appendingPathComponent("fleet.yaml").path, "--state", location])
        let everyone = Dictionary(uniqueKeysWithValues: (0..<agents).map { ("a\($0)", 1) })

        var failovers: [Double] = []
        var stops: [Double] = []
        for round in 1...rounds {
            // Settled: every agent once, every node live.
            guard
                wait(
                    seconds: 60,
                    until: {
                        guard Self.agents(under: root) == everyone, let status = try? nodeStatus(binary, location) else { return false }
                        return status.values.filter(\.live).count == nodes && status.values.map(\.agents.count).reduce(0, +) == agents
                    })
            else { throw ValidationError("round \(round): the fleet did not settle within a minute (logs in \(work.path))") }
            let status = try nodeStatus(binary, location)
            guard let victim = status.sorted(by: { ($0.value.agents.count, $1.key) > ($1.value.agents.count, $0.key) }).first else {
                throw ValidationError("no node")
            }
            let moved = victim.value.agents
            let killed = Self.now()
            kill(processes[victim.key]!.processIdentifier, SIGKILL)
            processes[victim.key]!.waitUntilExit()
            var down: Double?
            var up: Double?
            var worst = 0
            let deadline = killed + 60
            while up == nil && Self.now() < deadline {
                let counts = Self.agents(under: root)
                worst = max(worst, counts.values.max() ?? 0)
                let at = Self.now()
                if down == nil && moved.contains(where: { counts[$0] == nil }) { down = at }
                if down != nil && counts == everyone { up = at }
                usleep(5000)
            }
            guard worst <= 1 else { throw ValidationError("round \(round): an agent ran twice") }
            guard let up, let down else {
                throw ValidationError("round \(round): the agents of \(victim.key) did not come back within a minute")
            }
            failovers.append(up - killed)
            stops.append(down - killed)
            print(
                String(
                    format: "round %d: kill -9 of %@ (%d agents): stopped after %.2f s, running elsewhere after %.2f s", round, victim.key,
                    moved.count, down - killed, up - killed))
            try start(victim.key)
        }
        func summary(_ values: [Double]) -> String {
            let sorted = values.sorted()
            return String(format: "min %.2f s, median %.2f s, max %.2f s", sorted.first!, sorted[sorted.count / 2], sorted.last!)
        }
        print(
            "failover: \(nodes) nodes on \(postgres ? "PostgreSQL" : "SQLite"), \(agents) agents, \(rounds) kills; load average \(load) at the start, \(Self.loadAverage()) at the end"
        )
        print("  agents of the killed node stopped (its guard): \(summary(stops))")
        print("  running on other nodes: \(summary(failovers))")
    }

    private func fleet() -> String {
        let names = (0..<agents).map { "a\($0)" }
        var text = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, contextWindow: 1000, maxOutputTokens: 100, pricing: {input: 0.1, output: 0.1}}]
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: everyone}
            spec:
              appliesTo: {agents: [\(names.joined(separator: ", "))]}
              allow: {models: ["sim/*"]}

            """
        for name in names {
            text += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: \(name)}
                spec:
                  model: sim/small
                  runtime: {command: /bin/sh, args: [-c, "exec sleep 100000"], gracePeriod: 2s}

                """
        }
        return text
    }

    struct NodeStatus {
        var live: Bool
        var agents: [String]
    }

    private func nodeStatus(_ binary: String, _ location: String) throws -> [String: NodeStatus] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["get", "nodes", "-o", "json", "--state", location]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0, let list = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let items = list["items"] as? [[String: Any]]
        else { return [:] }
        var nodes: [String: NodeStatus] = [:]
        for item in items {
            guard let name = (item["metadata"] as? [String: Any])?["name"] as? String, let status = item["status"] as? [String: Any] else {
                continue
            }
            nodes[name] = NodeStatus(
                live: status["live"] as? Bool ?? false,
                agents: (status["agents"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String })
        }
        return nodes
    }

    private func wait(seconds: Double, until condition: () -> Bool) -> Bool {
        let deadline = Self.now() + seconds
        while Self.now() < deadline {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// Agent processes (their `ORL_AGENT`) working under `root`, by agent.
    static func agents(under root: String) -> [String: Int] {
        var counts: [String: Int] = [:]
        for pid in agentProcesses(under: root) {
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            for variable in environ.split(separator: 0) where variable.starts(with: Array("ORL_AGENT=".utf8)) {
                counts[String(decoding: variable.dropFirst(10), as: UTF8.self), default: 0] += 1
            }
        }
        return counts
    }

    static func agentProcesses(under root: String) -> [Int32] {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var pids: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            guard let pid = Int32(name) else { continue }
            var buffer = [CChar](repeating: 0, count: 4096)
            let length = readlink("/proc/\(name)/cwd", &buffer, 4095)
            guard length > 0 else { continue }
            let cwd = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if cwd.hasPrefix(root + "/") { pids.append(pid) }
        }
        return pids
    }
}
