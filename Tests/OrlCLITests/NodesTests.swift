import Foundation
import OrlCore
import OrlStore
import OrlTestPostgres
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Several `orlctl controller --node` processes sharing one state, end to end: real
/// processes, a real shared store, agents counted by their `ORL_AGENT` in /proc, sampled
/// continuously, so that an agent running twice at any instant would be seen.
@Suite(.serialized) struct NodesTests {
    /// Every agent process of a state, sampled every 10 ms on a thread of its own.
    final class Sampler: @unchecked Sendable {
        struct Sample {
            var at: ContinuousClock.Instant
            var counts: [String: Int]
        }
        let root: String
        private let state = Mutex<(samples: [Sample], stop: Bool)>(([], false))
        private let done = DispatchSemaphore(value: 0)

        init(root: String) {
            self.root = root
            Thread { [self] in
                while !state.withLock({ $0.stop }) {
                    let counts = Self.agents(under: root)
                    let changed = state.withLock { state in
                        guard state.samples.last?.counts != counts else { return false }
                        state.samples.append(Sample(at: .now, counts: counts))
                        return true
                    }
                    // Waits on the counts look again now.
                    if changed { Changes.signal() }
                    usleep(10_000)
                }
                done.signal()
            }.start()
        }

        func stop() {
            state.withLock { $0.stop = true }
            done.wait()
        }

        var latest: [String: Int] { state.withLock { $0.samples.last?.counts ?? [:] } }
        /// The most processes any agent ever had at once.
        var worst: [String: Int] {
            state.withLock { state in
                var worst: [String: Int] = [:]
                for sample in state.samples { for (agent, count) in sample.counts { worst[agent] = max(worst[agent] ?? 0, count) } }
                return worst
            }
        }
        /// Every change seen, oldest first.
        func samples() -> [Sample] { state.withLock { $0.samples } }

        /// Processes whose working directory is under `root` and whose environment names an
        /// agent, by agent: pids of a state's agents, however they were started.
        static func agents(under root: String) -> [String: Int] {
            var counts: [String: Int] = [:]
            guard let directory = opendir("/proc") else { return counts }
            defer { closedir(directory) }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                guard Int32(name) != nil else { continue }
                var buffer = [CChar](repeating: 0, count: 4096)
                let length = readlink("/proc/\(name)/cwd", &buffer, 4095)
                guard length > 0 else { continue }
                let cwd = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                guard cwd.hasPrefix(root) else { continue }
                guard let environ = FileManager.default.contents(atPath: "/proc/\(name)/environ") else { continue }
                for variable in environ.split(separator: 0) where variable.starts(with: Array("ORL_AGENT=".utf8)) {
                    counts[String(decoding: variable.dropFirst(10), as: UTF8.self), default: 0] += 1
                }
            }
            return counts
        }
    }

    final class Cluster {
        let work: TemporaryDirectory
        var nodes: [String: Process] = [:]
        /// A SQLite state directory, or a PostgreSQL URL (each node then has a data directory
        /// of its own, as on a machine of its own).
        let state: String
        var postgres: Bool { state.hasPrefix("postgres") }

        init(state: String? = nil) throws {
            work = try TemporaryDirectory()
            self.state = state ?? work.url.appendingPathComponent("state").path
        }

        deinit {
            for process in nodes.values where process.isRunning {
                kill(process.processIdentifier, SIGCONT)
                kill(process.processIdentifier, SIGKILL)
            }
            // A killed node's guard outlives it, to kill the node's agents and then end the
            // node's lease in the state (which it made anew once the test had removed it).
            // The guards and the agents go too, before `work` is removed: no process of the
            // test writes under it afterwards, or survives the test. (Waited for by pidfd:
            // Process.waitUntilExit took 10 s here for a node already killed.)
            Survivors.end(under: work.url.path)
        }

        func start(_ name: String, labels: [String] = [], state url: String? = nil) throws {
            let process = Process()
            process.executableURL = Orlctl.binary
            process.arguments =
                ["controller", "--state", url ?? state, "--node", name] + labels.flatMap { ["--node-label", $0] }
                + (postgres ? ["--data-dir", work.url.appendingPathComponent(name).path] : [])
            process.currentDirectoryURL = work.url
            let log = work.url.appendingPathComponent("\(name).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            nodes[name] = process
        }

        func log(_ name: String) -> String {
            (try? String(contentsOf: work.url.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
        }

        func orlctl(_ arguments: [String]) throws -> Orlctl.Result {
            try Orlctl.run(arguments + ["--state", state], in: work.url)
        }

        func apply(_ agents: [String]) throws {
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
                  appliesTo: {agents: [\(agents.joined(separator: ", "))]}
                  allow: {models: ["sim/*"]}

                """
            for agent in agents {
                text += """
                    ---
                    apiVersion: orl.dev/v1
                    kind: Agent
                    metadata: {name: \(agent)}
                    spec:
                      model: sim/small
                      runtime: {command: /bin/sh, args: [-c, "exec sleep 1000"], gracePeriod: 2s}

                    """
            }
            try work.write("fleet/fleet.yaml", text)
            let result = try orlctl(["apply", "-f", "fleet"])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        }

        struct NodeStatus {
            var live: Bool
            var generation: Int
            var agents: [String]
            var roles: [String]
        }

        /// Asked in process: no orlctl started at each look of a wait.
        func nodeStatus() async throws -> [String: NodeStatus] {
            let result = try await Orlctl.call(["get", "nodes", "-o", "json", "--state", state], in: work.url)
            guard result.status == 0, let data = result.stdout.data(using: .utf8),
                let list = try JSONSerialization.jsonObject(with: data) as? [String: Any], let items = list["items"] as? [[String: Any]]
            else { return [:] }
            var nodes: [String: NodeStatus] = [:]
            for item in items {
                guard let name = (item["metadata"] as? [String: Any])?["name"] as? String, let status = item["status"] as? [String: Any]
                else { continue }
                nodes[name] = NodeStatus(
                    live: status["live"] as? Bool ?? false, generation: status["leaseGeneration"] as? Int ?? 0,
                    agents: (status["agents"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String },
                    roles: status["roles"] as? [String] ?? [])
            }
            return nodes
        }

        /// Looks at `condition` whenever something changes (a file under `work`, the
        /// sampler's counts: see `Changes`) until it holds or `timeout` passes.
        func wait(_ timeout: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
            try await waitUntil(seconds: Double(timeout.components.seconds), condition)
        }
    }

    let agents = ["a0", "a1", "a2", "a3", "a4", "a5"]

    @Test(.timeLimit(.minutes(2))) func agentsSpreadAndOnesOfAKilledNodeComeUpElsewhereNeverTwice() async throws {
        let cluster = try Cluster()
        for name in ["n1", "n2", "n3"] { try cluster.start(name) }
        #expect(try await cluster.wait(.seconds(30)) { try await cluster.nodeStatus().values.filter(\.live).count == 3 })
        let sampler = Sampler(root: cluster.state)
        defer { sampler.stop() }
        try cluster.apply(agents)
        #expect(try await cluster.wait(.seconds(30)) { sampler.latest == Dictionary(uniqueKeysWithValues: agents.map { ($0, 1) }) })
        let spread = try await cluster.nodeStatus()
        #expect(spread.values.map(\.agents.count).sorted() == [2, 2, 2], "\(spread)")

        // Exactly one node drives runs: the one killed below.
        let leaders = spread.filter { $0.value.roles.contains("runs") }.map(\.key)
        #expect(leaders.count == 1, "\(spread)")
        let dead = try #require(leaders.first)

        // kill -9 of a node: its guard kills its agents at once, and they come up elsewhere
        // once its lease has lapsed; the runs role moves too.
        let victim = try #require(spread[dead]).agents
        let killedAt = ContinuousClock.now
        kill(cluster.nodes[dead]!.processIdentifier, SIGKILL)
        // Back: after the victim's agents went down, a sample with every agent once, and the
        // survivors hold all six.
        func recovery() -> (down: NodesTests.Sampler.Sample, up: NodesTests.Sampler.Sample)? {
            let samples = sampler.samples().filter { $0.at > killedAt }
            guard let down = samples.first(where: { sample in victim.contains { sample.counts[$0] == nil } }),
                let up = samples.first(where: { sample in sample.at > down.at && agents.allSatisfy { sample.counts[$0] == 1 } })
            else { return nil }
            return (down, up)
        }
        let back = try await cluster.wait(.seconds(40)) {
            guard recovery() != nil else { return false }
            let status = try await cluster.nodeStatus()
            return !(status[dead]?.live ?? true) && status.filter { $0.key != dead }.map(\.value.agents.count).reduce(0, +) == 6
        }
        #expect(back)
        let times = try #require(recovery())
        let failover = times.up.at - killedAt
        print(
            "nodes: failover after kill -9 of a node: \(failover) (its agents killed by its guard after \(times.down.at - killedAt); bound 12 s)"
        )
        #expect(failover < .seconds(20))
        #expect(sampler.worst.values.allSatisfy { $0 == 1 }, "an agent ran twice: \(sampler.worst)")
        let after = try await cluster.nodeStatus()
        // Summed apart: inside #expect this one expression took a second to type-check.
        let agentsElsewhere: Int = after.filter { $0.key != dead }.reduce(0) { $0 + $1.value.agents.count }
        #expect(agentsElsewhere == 6)
        #expect(try await cluster.wait(.seconds(10)) { cluster.log(dead).contains("the node is gone") }, "\(cluster.log(dead))")
        #expect(
            try await cluster.wait(.seconds(10)) {
                try await cluster.nodeStatus().filter { $0.value.roles.contains("runs") }.map(\.key).count == 1
            })
        #expect(try await !cluster.nodeStatus()[dead]!.roles.contains("runs"))
    }

    @Test(.timeLimit(.minutes(2))) func aCordonedNodeGetsNoNewAgentsAndALoneControllerRefusesTheState() async throws {
        let cluster = try Cluster()
        for name in ["n1", "n2"] { try cluster.start(name) }
        #expect(try await cluster.wait(.seconds(30)) { try await cluster.nodeStatus().values.filter(\.live).count == 2 })
        let cordoned = try cluster.orlctl(["cordon", "n2"])
        #expect(cordoned.status == 0 && cordoned.stdout == "node/n2 cordoned\n", "\(cordoned.stdout)\(cordoned.stderr)")
        #expect(try cluster.orlctl(["cordon", "nope"]).status == 2)
        let table = try cluster.orlctl(["get", "nodes"])
        #expect(table.stdout.contains("Ready,SchedulingDisabled"), "\(table.stdout)")
        let sampler = Sampler(root: cluster.state)
        defer { sampler.stop() }
        try cluster.apply(["a0", "a1"])
        #expect(try await cluster.wait(.seconds(30)) { sampler.latest == ["a0": 1, "a1": 1] })
        #expect(try await cluster.nodeStatus()["n1"]?.agents == ["a0", "a1"])
        #expect(try await cluster.nodeStatus()["n2"]?.agents == [])
        #expect(try cluster.orlctl(["uncordon", "node/n2"]).status == 0)
        // A controller without --node would run every agent a second time: it refuses.
        let lone = try cluster.orlctl(["controller"])
        #expect(lone.status == 2 && lone.stderr.contains("--node NAME"), "\(lone.stderr)")
        // describe names the node that runs the agent.
        let described = try cluster.orlctl(["describe", "agent/a0"])
        #expect(described.stdout.contains("n1 (lease generation 1)"), "\(described.stdout)")
        // A node stopped cleanly ends its lease at once.
        let stopped = try cluster.orlctl(["controller", "stop", "--node", "n2"])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(try await cluster.nodeStatus()["n2"]?.live == false)
        #expect(sampler.worst.values.allSatisfy { $0 == 1 })
    }

    @Test(.timeLimit(.minutes(2))) func aNodeThatStopsRenewingLosesItsAgentsBeforeAnotherStartsThemAndComesBackFenced() async throws {
        let cluster = try Cluster()
        for name in ["n1", "n2"] { try cluster.start(name) }
        #expect(try await cluster.wait(.seconds(30)) { try await cluster.nodeStatus().values.filter(\.live).count == 2 })
        let sampler = Sampler(root: cluster.state)
        defer { sampler.stop() }
        let four = Array(agents.prefix(4))
        try cluster.apply(four)
        #expect(try await cluster.wait(.seconds(30)) { sampler.latest == Dictionary(uniqueKeysWithValues: four.map { ($0, 1) }) })
        let victim = try #require(try await cluster.nodeStatus()["n1"]).agents
        #expect(victim.count == 2)

        // The node hangs (SIGSTOP): it renews nothing, and cannot stop anything itself; its
        // guard kills its agents at the stop deadline, before the lease lapses and n2 takes them.
        let pid = cluster.nodes["n1"]!.processIdentifier
        let stoppedAt = ContinuousClock.now
        kill(pid, SIGSTOP)
        #expect(
            try await cluster.wait(.seconds(40)) { try await cluster.nodeStatus()["n2"]?.agents.count == 4 && sampler.latest.count == 4 })
        let samples = sampler.samples().filter { $0.at > stoppedAt }
        for agent in victim {
            let gone = try #require(samples.first { $0.counts[agent] == nil }, "\(agent) never stopped")
            let back = try #require(samples.first { $0.at > gone.at && $0.counts[agent] == 1 }, "\(agent) never came back")
            print("nodes: \(agent) gone \(gone.at - stoppedAt) after SIGSTOP, back on n2 after \(back.at - stoppedAt)")
        }
        #expect(sampler.worst.values.allSatisfy { $0 == 1 }, "an agent ran twice: \(sampler.worst)")

        // It comes back with a stale lease: fenced, it stops what it had (nothing is left),
        // registers again under a new generation and takes nothing back.
        kill(pid, SIGCONT)
        #expect(
            try await cluster.wait(.seconds(30)) { try await cluster.nodeStatus()["n1"].map { $0.live && $0.generation == 2 } ?? false })
        #expect(try await cluster.wait(.seconds(10)) { cluster.log("n1").contains("lost its lease") }, "\(cluster.log("n1"))")
        #expect(try await cluster.nodeStatus()["n2"]?.agents.count == 4)
        #expect(sampler.worst.values.allSatisfy { $0 == 1 }, "an agent ran twice: \(sampler.worst)")
    }
}

/// A TCP proxy on loopback the test controls: it forwards to `upstream` until `cut`, then
/// forwards nothing more and answers no new connection, without closing any: a network
/// partition as the node sees it (queries hang, as across a dead link), not a reset.
final class PartitionProxy: @unchecked Sendable {
    let port: Int
    private let upstream: Int
    private let listener: Int32
    private let state = Mutex<(cut: Bool, fds: [Int32], closed: Bool)>((false, [], false))

    init(upstream: Int) throws {
        self.upstream = upstream
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// Stops forwarding, in both directions, on every connection, and for new ones.
    func cut() { state.withLock { $0.cut = true } }

    private var isCut: Bool { state.withLock { $0.cut } }

    private func keep(_ fd: Int32) { state.withLock { $0.fds.append(fd) } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if state.withLock({ $0.closed }) { return }
                continue
            }
            keep(client)
            // Cut: the connection is accepted and never answered.
            if isCut { continue }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstream)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                close(server)
                continue
            }
            keep(server)
            Thread { [self] in pump(from: client, to: server) }.start()
            Thread { [self] in pump(from: server, to: client) }.start()
        }
    }

    private func pump(from: Int32, to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
            if count <= 0 { return }
            // Cut (for good): what arrives is never delivered, and nothing more is read,
            // so the sender's writes back up as across a dead link.
            if isCut { return }
            var sent = 0
            while sent < count {
                let written = buffer[sent..<count].withUnsafeBytes { write(to, $0.baseAddress, $0.count) }
                if written <= 0 { return }
                sent += written
            }
        }
    }

    deinit {
        let fds = state.withLock { state -> [Int32] in
            state.closed = true
            return state.fds
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in fds {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }
}

/// Three nodes on a PostgreSQL state, each with a data directory of its own as on three
/// machines: agents spread, `kill -9` of one moves its agents, and one partitioned from the
/// database (through a proxy that stops forwarding) stops its agents when it cannot renew,
/// before another node starts them. Never an agent twice.
@Suite(.serialized, .enabled(if: PostgresCluster.unavailable == nil, "PostgreSQL is not installed; run scripts/install-deps"))
struct NodesPostgresTests {
    @Test(.timeLimit(.minutes(3))) func threeNodesOnPostgresFailOverAndAPartitionedNodeStopsFirst() async throws {
        let cluster = try PostgresCluster.shared()
        let url = try cluster.database("nodes")
        let proxy = try PartitionProxy(upstream: cluster.port)
        let throughProxy = url.replacingOccurrences(of: ":\(cluster.port)/", with: ":\(proxy.port)/")
        let nodes = try NodesTests.Cluster(state: url)
        try nodes.start("n1", state: throughProxy)
        try nodes.start("n2")
        try nodes.start("n3")
        #expect(try await nodes.wait(.seconds(60)) { try await nodes.nodeStatus().values.filter(\.live).count == 3 }, "\(nodes.log("n1"))")
        let sampler = NodesTests.Sampler(root: nodes.work.url.path)
        defer { sampler.stop() }
        let agents = ["a0", "a1", "a2", "a3", "a4", "a5"]
        try nodes.apply(agents)
        #expect(try await nodes.wait(.seconds(60)) { sampler.latest == Dictionary(uniqueKeysWithValues: agents.map { ($0, 1) }) })
        let spread = try await nodes.nodeStatus()
        #expect(spread.values.map(\.agents.count).sorted() == [2, 2, 2], "\(spread)")

        // kill -9 of n2.
        let killed = try #require(spread["n2"]).agents
        let killedAt = ContinuousClock.now
        kill(nodes.nodes["n2"]!.processIdentifier, SIGKILL)
        #expect(
            try await nodes.wait(.seconds(40)) {
                let status = try await nodes.nodeStatus()
                return !(status["n2"]?.live ?? true) && (status["n1"]?.agents.count ?? 0) + (status["n3"]?.agents.count ?? 0) == 6
                    && sampler.latest.count == 6
            })
        let afterKill = sampler.samples().filter { $0.at > killedAt }
        if let down = afterKill.first(where: { sample in killed.contains { sample.counts[$0] == nil } }),
            let up = afterKill.first(where: { sample in sample.at > down.at && agents.allSatisfy { sample.counts[$0] == 1 } })
        {
            print(
                "nodes (PostgreSQL): failover after kill -9 of a node: \(up.at - killedAt) (its agents killed after \(down.at - killedAt))")
        }

        // Partition n1 from the database.
        let before = try await nodes.nodeStatus()
        let partitioned = try #require(before["n1"]).agents
        #expect(!partitioned.isEmpty)
        let cutAt = ContinuousClock.now
        proxy.cut()
        #expect(
            try await nodes.wait(.seconds(60)) {
                let status = try await nodes.nodeStatus()
                return status["n3"]?.agents.count == 6 && sampler.latest.count == 6 && agents.allSatisfy { sampler.latest[$0] == 1 }
            }, "\(nodes.log("n1"))")
        let samples = sampler.samples().filter { $0.at > cutAt }
        for agent in partitioned {
            let gone = try #require(samples.first { $0.counts[agent] == nil }, "\(agent) never stopped")
            let back = try #require(samples.first { $0.at > gone.at && $0.counts[agent] == 1 }, "\(agent) never came back")
            print("nodes (PostgreSQL): \(agent) stopped \(gone.at - cutAt) after the cut, started on n3 after \(back.at - cutAt)")
        }
        #expect(sampler.worst.values.allSatisfy { $0 == 1 }, "an agent ran twice: \(sampler.worst)")
        #expect(try await nodes.wait(.seconds(10)) { nodes.log("n1").contains("could not renew its lease") }, "\(nodes.log("n1"))")
    }

    /// A run in flight across kill -9 of a node, on PostgreSQL (`NodesTests` runs it on SQLite).
    @Test(.timeLimit(.minutes(3))) func aRunInFlightFinishesAcrossAKilledNodeOnPostgres() async throws {
        let url = try PostgresCluster.shared().database("relay")
        let nodes = try NodesTests.Cluster(state: url)
        try await NodesTests.runInFlightAcrossAKilledNode(nodes, root: nodes.work.url.path)
    }

    /// A git source watched by one watch per node (`watch --node`): exactly one syncs it;
    /// when that node dies, the other node's watch takes it over.
    @Test(.timeLimit(.minutes(3))) func aSourceIsWatchedByOneNodeAtATimeAndMovesWhenItsNodeDies() async throws {
        let url = try PostgresCluster.shared().database("watchers")
        let repo = try GitFixture()
        try repo.write(
            "fleet/provider.yaml",
            """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, contextWindow: 1000, maxOutputTokens: 100, pricing: {input: 0.1, output: 0.1}}]
            """)
        try repo.commit("provider")
        let nodes = try NodesTests.Cluster(state: url)
        try nodes.start("n1")
        try nodes.start("n2")
        #expect(try await nodes.wait(.seconds(60)) { try await nodes.nodeStatus().values.filter(\.live).count == 2 })
        var watches: [String: Process] = [:]
        for name in ["n1", "n2"] {
            let process = Process()
            process.executableURL = Orlctl.binary
            process.arguments = [
                "watch", "--repo", repo.root.path, "--path", "fleet", "--interval", "1s", "--node", name, "--state", url, "--data-dir",
                nodes.work.url.appendingPathComponent("watch-\(name)").path,
            ]
            process.currentDirectoryURL = nodes.work.url
            let log = nodes.work.url.appendingPathComponent("watch-\(name).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            watches[name] = process
        }
        defer { for process in watches.values where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let watchers = ["n1", "n2"].map { name in (name, { nodes.log("watch-\(name)") }) }.reduce(into: [String: () -> String]()) {
            $0[$1.0] = $1.1
        }
        let holding = "watched by this watch"
        #expect(
            try await nodes.wait(.seconds(30)) { watchers.values.filter { $0().contains(holding) }.count == 1 },
            "\(watchers.mapValues { $0() })")
        let holder = try #require(watchers.first { $0.value().contains(holding) }?.key)
        let other = holder == "n1" ? "n2" : "n1"
        // Only the holder synced: the source was applied, and the other never said it synced.
        #expect(try await nodes.wait(.seconds(30)) { try nodes.orlctl(["get", "modelproviders"]).stdout.contains("sim") })
        #expect(!watchers[other]!().contains(holding))
        // The other watch says so at its first round, which may come after the holder's apply.
        #expect(
            try await nodes.wait(.seconds(30)) { watchers[other]!().contains("left to the watch") }, "\(watchers[other]!())")

        // The holder's node dies: the other node's watch takes the source over.
        kill(nodes.nodes[holder]!.processIdentifier, SIGKILL)
        #expect(try await nodes.wait(.seconds(40)) { watchers[other]!().contains(holding) }, "\(watchers[other]!())")
        #expect(try await nodes.wait(.seconds(10)) { watchers[holder]!().contains("left to the watch") }, "\(watchers[holder]!())")
    }
}

/// A workflow run in flight across `kill -9` of a node, three nodes: its steps are worked by
/// test agents (`Fixtures/test_agent.py`, one per node), and the node killed is the one that
/// holds the `runs` role while its agent works one of three parallel steps. The other two
/// steps finish during the failover, the killed agent's step is given up as soon as the
/// agent starts on its new node (not when its 5-minute task lease lapses) and done again there, and the run completes: every step's
/// side effect (the agent's `done` line) happened exactly once, no agent ever ran twice, and
/// the runs role moved. A live node that stalls past its renewal stops its agents by design:
/// their steps are then done again, each attempt given up only because its process ended.
extension NodesTests {
    static let workers = ["w1", "w2", "w3"]

    static func relayFleet(journal: String) -> String {
        var text = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, maxOutputTokens: 10, pricing: {input: 1, output: 1}}]
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: workers}
            spec:
              appliesTo: {agents: [w1, w2, w3]}
              allow: {models: ["sim/*"], handoffs: [w1, w2, w3]}
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: relay}
            spec:
              steps:
                - {id: split, agent: w1, inputs: {chat_calls: {value: "1"}}}
                - {id: x, agent: w1, dependsOn: [split], inputs: {sleep: {value: "6"}}, heartbeatTimeout: 5m, retry: {attempts: 3, backoff: 1s}}
                - {id: y, agent: w2, dependsOn: [split], inputs: {sleep: {value: "6"}}, heartbeatTimeout: 5m, retry: {attempts: 3, backoff: 1s}}
                - {id: z, agent: w3, dependsOn: [split], inputs: {sleep: {value: "6"}}, heartbeatTimeout: 5m, retry: {attempts: 3, backoff: 1s}}
                - {id: join, agent: w2, dependsOn: [x, y, z], inputs: {chat_calls: {value: "1"}}}

            """
        for worker in workers {
            text += """
                ---
                apiVersion: orl.dev/v1
                kind: Agent
                metadata: {name: \(worker)}
                spec:
                  model: sim/small
                  runtime:
                    command: python3
                    args: ["\(AgentRunsTests.fixtures)/test_agent.py"]
                    mounts:
                      - {path: "\(journal)", writable: true}
                      - {path: "\(Orlctl.packageRoot.appendingPathComponent("examples/agents").path)"}
                    env:
                      - {name: JOURNAL, value: "\(journal)"}
                      - {name: PYTHONUNBUFFERED, value: "1"}
                    gracePeriod: 2s

                """
        }
        return text
    }

    /// The whole scenario, on a SQLite state directory or a PostgreSQL database; `root` is
    /// where the agents' working directories are (what the sampler counts).
    static func runInFlightAcrossAKilledNode(_ cluster: Cluster, root: String) async throws {
        let journalPath = cluster.work.url.appendingPathComponent("journal.jsonl").path
        _ = FileManager.default.createFile(atPath: journalPath, contents: nil, attributes: [.posixPermissions: 0o666])
        func journal() -> [[String: Any]] {
            ((try? String(contentsOfFile: journalPath, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }
        for name in ["n1", "n2", "n3"] { try cluster.start(name) }
        #expect(
            try await cluster.wait(.seconds(60)) { try await cluster.nodeStatus().values.filter(\.live).count == 3 }, "\(cluster.log("n1"))"
        )
        let sampler = Sampler(root: root)
        defer { sampler.stop() }
        try cluster.work.write("fleet/fleet.yaml", relayFleet(journal: journalPath))
        let applied = try cluster.orlctl(["apply", "-f", "fleet"])
        try #require(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        try #require(try await cluster.wait(.seconds(60)) { sampler.latest == ["w1": 1, "w2": 1, "w3": 1] }, "\(sampler.latest)")
        #expect(
            try await cluster.wait(.seconds(30)) { try await cluster.nodeStatus().values.filter { $0.roles.contains("runs") }.count == 1 })
        let spread = try await cluster.nodeStatus()
        #expect(spread.values.map(\.agents.count).sorted() == [1, 1, 1], "\(spread)")
        let holder = try #require(spread.first { $0.value.roles.contains("runs") })
        let dead = holder.key
        let victim = try #require(holder.value.agents.first)
        let interrupted = ["w1": "x", "w2": "y", "w3": "z"][victim]!

        let started = try cluster.orlctl(["run", "workflow/relay"])
        #expect(started.status == 0, "\(started.stderr)")
        let id = String(started.stdout.dropFirst("run/".count).prefix(13))
        func run() throws -> [String: Any] {
            let listed = try cluster.orlctl(["runs", "-o", "json", "-A"])
            let runs = (try? JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any])?["runs"] as? [[String: Any]]
            return runs?.first { $0["id"] as? String == id } ?? [:]
        }
        func diagnosis() -> String {
            let described = (try? cluster.orlctl(["describe", "run/\(id)"]).stdout) ?? ""
            return "\(described)\n\(journal())\n" + ["n1", "n2", "n3"].map { "== \($0)\n\(cluster.log($0))" }.joined()
        }
        // The three parallel steps have started, and the one the victim's agent works is in
        // flight (the others are too, unless a stalled node started one late).
        #expect(
            try await cluster.wait(.seconds(60)) {
                Set(journal().filter { $0["event"] as? String == "start" }.compactMap { $0["step"] as? String }).isSuperset(of: [
                    "x", "y", "z",
                ])
            }, "\(diagnosis())")
        #expect(!journal().contains { $0["event"] as? String == "done" && $0["step"] as? String == interrupted }, "\(diagnosis())")

        // kill -9 of the node that drives runs and whose agent works one of them.
        let killedAt = ContinuousClock.now
        kill(cluster.nodes[dead]!.processIdentifier, SIGKILL)
        var status = ""
        let finished = try await cluster.wait(.seconds(90)) {
            status = try run()["status"] as? String ?? ""
            return status == "Succeeded" || status == "Failed"
        }
        let took = ContinuousClock.now - killedAt
        #expect(finished && status == "Succeeded", "run \(id) is \(status)\n\(diagnosis())")
        print("nodes: a run in flight across kill -9 of the runs node finished \(took) after the kill")
        // The interrupted step's heartbeatTimeout is 5 minutes: it was retried as soon as its
        // agent started on another node (the failover, then its 6 s of work), not after that.
        #expect(took < .seconds(30), "the run took \(took) after the kill: the step waited for its lease?\n\(diagnosis())")
        let described = try cluster.orlctl(["describe", "run/\(id)"]).stdout
        #expect(described.contains("ended while working on it"), "\(described)")

        // What the product guarantees: an attempt is handed to one process, once, and given
        // up only when that process ended (never here for its lease: 5 minutes); only the
        // last attempt's answer counts, and every attempt has the step's idempotency key.
        // The interrupted step's first attempt died with its node. Nothing else ends an
        // agent's process, unless a live node stalled past its renewal (a loaded host): it
        // stops its agents before its lease can lapse, says so, and their steps are done
        // again. With no such node, every step ran once but the interrupted one, twice.
        let stalled = ["n1", "n2", "n3"].filter { node in
            node != dead && ["could not renew its lease", "lost its lease"].contains { cluster.log(node).contains($0) }
        }
        if !stalled.isEmpty { print("nodes: \(stalled) could not confirm their leases in time and stopped their agents") }
        let steps = Dictionary(
            uniqueKeysWithValues: (try run()["steps"] as? [[String: Any]] ?? []).map { ($0["id"] as? String ?? "", $0) })
        let entries = journal().filter { ($0["task"] as? String ?? "").hasPrefix(id + "/") }
        let givenUp: [[String]] = described.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }.filter {
            (words: [String]) -> Bool in
            words.count > 3 && words[2] == "LeaseExpired"
                && words.joined(separator: " ").contains("ended while working on it (its process is gone)")
        }
        for step in ["split", "x", "y", "z", "join"] {
            let last = try #require(steps[step]?["attempt"] as? Int, "\(steps)")
            let mine = entries.filter { $0["step"] as? String == step }
            let starts = mine.filter { $0["event"] as? String == "start" }.compactMap { $0["attempt"] as? Int }
            let doneBy = mine.filter { $0["event"] as? String == "done" }.compactMap { $0["attempt"] as? Int }
            #expect(Set(mine.compactMap { $0["key"] as? String }) == ["\(id)/\(step)"])
            #expect(Set(starts).count == starts.count, "an attempt of \(step) was started twice: \(starts)\n\(diagnosis())")
            #expect(
                starts.contains(last) && doneBy.filter { $0 == last }.count == 1,
                "step \(step): \(starts), done by \(doneBy)\n\(diagnosis())")
            for attempt in 1..<max(1, last) {
                #expect(givenUp.contains { $0[0] == step && $0[1] == "\(attempt)" }, "\(step) attempt \(attempt)\n\(diagnosis())")
            }
            // Work done again is work whose process ended while on it: each attempt that
            // started and was not the last started on the node killed or on one that stalled.
            #expect(mine.allSatisfy { $0["node"] is String }, "\(mine)")
            for redone in mine where redone["event"] as? String == "start" && redone["attempt"] as? Int != last {
                let node = redone["node"] as? String ?? ""
                let attempt = redone["attempt"] as? Int ?? 0
                #expect(
                    node == dead || stalled.contains(node),
                    "step \(step) attempt \(attempt) ran on \(node), neither killed (\(dead)) nor stalled (\(stalled))\n\(diagnosis())")
            }
            let least = step == interrupted ? 2 : 1
            if stalled.isEmpty {
                #expect(
                    last == least && starts.sorted() == Array(1...least) && doneBy == [last],
                    "step \(step): attempt \(last), started \(starts), done by \(doneBy)\n\(diagnosis())")
            } else {
                #expect(last >= least, "step \(step): attempt \(last)\n\(diagnosis())")
            }
        }
        #expect(sampler.worst.values.allSatisfy { $0 == 1 }, "an agent ran twice: \(sampler.worst)")

        // The runs role moved to a live node.
        #expect(
            try await cluster.wait(.seconds(20)) {
                let now = try await cluster.nodeStatus()
                return now.filter { $0.value.roles.contains("runs") }.map(\.key).count == 1 && now[dead]?.roles.contains("runs") == false
                    && now[dead]?.live == false
            })
        #expect(try await cluster.nodeStatus()[dead]?.agents == [])
    }

    @Test(.timeLimit(.minutes(3))) func aRunInFlightFinishesAcrossAKilledNodeWithNoStepTwice() async throws {
        let cluster = try Cluster()
        try await Self.runInFlightAcrossAKilledNode(cluster, root: cluster.state)
    }
}

/// A SQLite state removed under its nodes stays removed: each node stops, and its guard,
/// which ends the lease of a node that ended, finds no state rather than making a new,
/// empty one in its place (it once did, and every test of nodes left one behind).
extension NodesTests {
    @Test(.timeLimit(.minutes(2))) func aStateRemovedUnderItsNodesStaysRemoved() async throws {
        let cluster = try Cluster()
        try cluster.start("n1")
        #expect(try await cluster.wait(.seconds(60)) { try await cluster.nodeStatus()["n1"]?.live == true }, "\(cluster.log("n1"))")
        try FileManager.default.removeItem(atPath: cluster.state)
        let node = try #require(cluster.nodes["n1"])
        // The node stops by itself; its guard then has the last word, in the same log.
        #expect(
            try await cluster.wait(.seconds(60)) { !node.isRunning && cluster.log("n1").contains("guard of n1: ") },
            "\(cluster.log("n1"))")
        #expect(cluster.log("n1").contains("was removed"), "\(cluster.log("n1"))")
        #expect(cluster.log("n1").contains("cannot end lease generation"), "\(cluster.log("n1"))")
        Survivors.awaitEnd(under: cluster.work.url.path)
        #expect(!FileManager.default.fileExists(atPath: cluster.state), "a new state was made: \(cluster.log("n1"))")
    }
}

/// Budget holds of a killed node: a model call hangs upstream on node n1's gateway (its
/// worst case reserved in the shared state), n1 is killed with `kill -9`, and the other
/// node's gateway releases the hold once n1's guard has ended its lease: the cap is not
/// eaten by a dead controller until its window ends.
extension NodesTests {
    @Test(.timeLimit(.minutes(2))) func theBudgetHoldsOfAKilledNodeAreReleasedByAnother() async throws {
        let cluster = try Cluster()
        let portFile = cluster.work.url.appendingPathComponent("upstream.port").path
        try cluster.work.write(
            "upstream.py",
            """
            import http.server, sys, time
            class Hang(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    open(sys.argv[1] + ".hit", "w").close()
                    time.sleep(600)
                def log_message(self, *args):
                    pass
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hang)
            with open(sys.argv[1] + ".tmp", "w") as out:
                out.write(str(server.server_address[1]))
            import os
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])
            server.serve_forever()
            """)
        var helpers: [Process] = []
        defer { for process in helpers where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        func python(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3"] + arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            helpers.append(process)
        }
        try python([cluster.work.url.appendingPathComponent("upstream.py").path, portFile])
        #expect(try await cluster.wait(.seconds(30)) { FileManager.default.fileExists(atPath: portFile) })
        let port = try #require(Int(try String(contentsOfFile: portFile, encoding: .utf8)))

        for name in ["n1", "n2"] { try cluster.start(name) }
        #expect(try await cluster.wait(.seconds(30)) { try await cluster.nodeStatus().values.filter(\.live).count == 2 })
        try cluster.work.write(
            "fleet/fleet.yaml",
            """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: slow}
            spec:
              apiStyle: openai
              baseURL: http://127.0.0.1:\(port)/v1
              timeout: 300s
              models: [{name: big, maxOutputTokens: 100, pricing: {input: 1, output: 1}}]
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: caller}
            spec:
              model: slow/big
              runtime: {command: /bin/sh, args: [-c, "exec sleep 1000"], gracePeriod: 2s}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: caller}
            spec:
              appliesTo: {agents: [caller]}
              allow: {models: ["slow/*"]}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: cap}
            spec:
              appliesTo: {agents: [caller]}
              limits: [{window: day, usd: 100}]
              onExceeded: halt
            """)
        let applied = try cluster.orlctl(["apply", "-f", "fleet"])
        try #require(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        var placed = ""
        try #require(
            try await cluster.wait(.seconds(30)) {
                placed = try await cluster.nodeStatus().first { $0.value.agents == ["caller"] }?.key ?? ""
                return !placed.isEmpty && PostgresGatewayBudgetTests.agentToken(under: cluster.state) != nil
            })
        let token = try #require(PostgresGatewayBudgetTests.agentToken(under: cluster.state))
        let api = try String(contentsOfFile: cluster.state + "/nodes/\(placed)/controller.api", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try cluster.work.write(
            "call.py",
            """
            import json, sys, urllib.request
            body = json.dumps({"model": "slow/big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}).encode()
            request = urllib.request.Request(sys.argv[1] + "/v1/chat/completions", data=body,
                headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=600).read()
            except Exception:
                pass
            """)
        try python([cluster.work.url.appendingPathComponent("call.py").path, api, token])
        func reserved() throws -> Int64 {
            try SQLiteStateStore(directory: cluster.state).budgetLines(since: nil).first { $0.key.budgetName == "cap" }?.reserved.microUSD
                ?? 0
        }
        // The call is in flight upstream: its worst case is held in the store.
        #expect(try await cluster.wait(.seconds(30)) { FileManager.default.fileExists(atPath: portFile + ".hit") })
        #expect(try reserved() > 0)

        let killedAt = ContinuousClock.now
        kill(cluster.nodes[placed]!.processIdentifier, SIGKILL)
        let other = placed == "n1" ? "n2" : "n1"
        #expect(try await cluster.wait(.seconds(30)) { try reserved() == 0 }, "\(cluster.log(other))")
        print("nodes: the budget hold of a call in flight on a killed node released after \(ContinuousClock.now - killedAt)")
        // The store commits the release before the node logs it: wait for the line too.
        #expect(
            try await cluster.wait(.seconds(10)) { cluster.log(other).contains("released 1 budget hold") },
            "\(cluster.log(other))")
    }
}
