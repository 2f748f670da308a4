import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `orlctl controller` end to end: the real binary, a temporary state directory, agents
/// that are `/bin/sh` sleeping. Agents are found through /proc (their working directory
/// is under the state directory), so a duplicate would be seen. Every process a test
/// starts is killed when it ends, passed or not.
@Suite(.serialized) struct ControllerCommandTests {
    final class Harness {
        let work: TemporaryDirectory
        var controllers: [Process] = []
        /// Controllers started with --detach, by PID.
        var detached: [Int32] = []
        var state: String { work.url.appendingPathComponent("state").path }
        var agentsDirectory: String { state + "/agents/default/" }

        init() throws { work = try TemporaryDirectory() }

        deinit {
            for controller in controllers where controller.isRunning { kill(controller.processIdentifier, SIGKILL) }
            for pid in detached { kill(pid, SIGKILL) }
            for pids in agents().values { for pid in pids { kill(-pid, SIGKILL) } }
        }

        struct Agent {
            var name: String
            var env = "v1"
            var suspend = false
            var command = "/bin/sh"
            var script = "echo up; exec sleep 1000"
        }

        func manifests(_ agents: [Agent]) -> String {
            var text = """
                apiVersion: orl.dev/v1
                kind: ModelProvider
                metadata: {name: sim}
                spec:
                  apiStyle: simulated
                  models: [{name: small, contextWindow: 1000, maxOutputTokens: 100, pricing: {input: 0.1, output: 0.1}}]
                ---
                apiVersion: orl.dev/v1
                kind: Budget
                metadata: {name: all}
                spec:
                  appliesTo: {selector: {matchLabels: {fleet: test}}}
                  scope: perAgent
                  limits: [{window: day, usd: 1}]
                  onExceeded: halt

                """
            for agent in agents {
                text += """
                    ---
                    apiVersion: orl.dev/v1
                    kind: Agent
                    metadata: {name: \(agent.name), labels: {fleet: test}}
                    spec:
                      model: sim/small
                      suspend: \(agent.suspend)
                      runtime:
                        command: \(agent.command)
                        args: [-c, "\(agent.script)"]
                        env: [{name: VERSION, value: \(agent.env)}]
                        gracePeriod: 2s
                    ---
                    apiVersion: orl.dev/v1
                    kind: Policy
                    metadata: {name: \(agent.name)}
                    spec:
                      appliesTo: {agents: [\(agent.name)]}
                      allow: {models: ["sim/*"]}

                    """
            }
            return text
        }

        func apply(_ agents: [Agent], prune: Bool = false) throws {
            try work.write("fleet/fleet.yaml", manifests(agents))
            let result = try orlctl(["apply", "-f", "fleet"] + (prune ? ["--prune"] : []))
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        }

        func orlctl(_ arguments: [String]) throws -> Orlctl.Result {
            try Orlctl.run(arguments + ["--state", state], in: work.url)
        }

        /// Starts `orlctl controller` with its standard error in a file.
        @discardableResult
        func startController(log: String = "controller.log", arguments: [String] = [], environment: [String: String] = [:]) throws
            -> Process
        {
            let process = Process()
            process.executableURL = Orlctl.binary
            process.arguments = ["controller", "--state", state] + arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
            process.currentDirectoryURL = work.url
            let logURL = work.url.appendingPathComponent(log)
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: logURL)
            process.standardOutput = FileHandle.nullDevice
            Changes.signalOnExit(process)
            try process.run()
            controllers.append(process)
            return process
        }

        /// Wakes the (last started) controller `count` times, each once the previous wake's
        /// `woken` line is out, and says whether every wake was seen. The loop writes that
        /// line as it takes its next wakes, which is after it read the store and drained its
        /// queue for the previous one: the last line proves a whole pass after the one
        /// before it, and the first one the passes that came before the first wake.
        func passes(_ count: Int, log name: String = "controller.log") async -> Bool {
            guard let controller = controllers.last else { return false }
            for _ in 0..<count {
                let seen = log(name).components(separatedBy: "woken: SIGUSR1").count
                kill(controller.processIdentifier, SIGUSR1)
                guard await waitUntil(seconds: 30, { log(name).components(separatedBy: "woken: SIGUSR1").count > seen }) else {
                    return false
                }
            }
            return true
        }

        func log(_ name: String = "controller.log") -> String {
            (try? String(contentsOf: work.url.appendingPathComponent(name), encoding: .utf8)) ?? ""
        }

        /// Live agent processes by agent name: processes whose working directory is the
        /// agent's home under this state directory, once they run their own program (a
        /// child between its spawn and its execve is still the controller's image, with
        /// the controller's environment), and whose parent is not one of them: what an
        /// agent starts in its home (a shell's `sleep`) is part of that agent's process.
        func agents() -> [String: [Int32]] {
            var candidates: [(agent: String, pid: Int32, parent: Int32)] = []
            guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
            let controller = Orlctl.binary.resolvingSymlinksInPath().path
            for entry in entries {
                guard let pid = Int32(entry),
                    let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"),
                    cwd.hasPrefix(agentsDirectory),
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) != controller,
                    let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                    let close = stat.lastIndex(of: ")")
                else { continue }
                // After ") ": the state, then the parent's pid.
                let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
                guard fields.count > 1, fields[0] != "Z", let parent = Int32(fields[1]) else { continue }
                candidates.append((String(cwd.dropFirst(agentsDirectory.count)), pid, parent))
            }
            let homes = Dictionary(candidates.map { ($0.pid, $0.agent) }, uniquingKeysWith: { first, _ in first })
            var found: [String: [Int32]] = [:]
            for candidate in candidates where homes[candidate.parent] != candidate.agent {
                found[candidate.agent, default: []].append(candidate.pid)
            }
            return found
        }

        /// One pid per named agent, once each runs exactly one process.
        func waitForAgents(_ names: Set<String>, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String:
            Int32]
        {
            var last: [String: [Int32]] = [:]
            let ok = await waitUntil {
                last = agents()
                return Set(last.keys) == names && last.values.allSatisfy { $0.count == 1 }
            }
            #expect(ok, "\(what): agents \(last), expected one each of \(names.sorted())\n\(log())", sourceLocation: sourceLocation)
            try #require(ok)
            return last.mapValues { $0[0] }
        }

        func stopController(sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let stop = try orlctl(["controller", "stop"])
            #expect(stop.status == 0, "\(stop.stderr)", sourceLocation: sourceLocation)
            for controller in controllers where controller.isRunning {
                #expect(await waitUntil { !controller.isRunning }, sourceLocation: sourceLocation)
            }
        }

        /// `stopController()` for a `defer`, which cannot suspend: `controller stop` returns
        /// once the controller let go of its lock, so what is left is to collect the process.
        func stopControllerAtEnd(sourceLocation: SourceLocation = #_sourceLocation) {
            guard let stop = try? orlctl(["controller", "stop"]) else { return }
            #expect(stop.status == 0, "\(stop.stderr)", sourceLocation: sourceLocation)
            if stop.status == 0 { for controller in controllers { controller.waitUntilExit() } }
        }
    }

    @Test func fleetComesUpRestartsKilledAgentsAndStops() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "b")])
        let controller = try h.startController()
        let first = try await h.waitForAgents(["a", "b"], "after start")

        // Ready in the status that get shows.
        #expect(
            await waitUntil {
                guard let r = try? h.orlctl(["get", "agents", "-o", "json"]),
                    let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                    let items = json["items"] as? [[String: Any]]
                else { return false }
                return items.count == 2
                    && items.allSatisfy { item in
                        let conditions = (item["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
                        return conditions.contains { $0["type"] as? String == "Ready" && $0["status"] as? String == "True" }
                    }
            })

        // The environment is the agent's own plus orl's, nothing from the controller
        // (PWD is exported by /bin/sh itself; ORL_CODE_DIR is where the manifests were applied from).
        let environ = try String(contentsOfFile: "/proc/\(first["a"]!)/environ", encoding: .utf8)
        let names = Set(environ.split(separator: "\0").map { String($0.prefix { $0 != "=" }) }).subtracting(["PWD"])
        #expect(
            names == [
                "VERSION", "ORL_AGENT", "ORL_NAMESPACE", "ORL_MODEL", "ORL_API_URL", "ORL_TOKEN", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ORL_CODE_DIR", "ORL_STATE_DIR",
            ])
        #expect(environ.contains("ORL_AGENT=a\0"))
        // The gateway is the controller's API, and the agent's API key its own token.
        let api = try String(contentsOfFile: h.state + "/controller.api", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let pairs: [(String, String)] = environ.split(separator: "\0").map { (entry: Substring) -> (String, String) in
            (String(entry.prefix { $0 != "=" }), String(entry.drop { $0 != "=" }.dropFirst()))
        }
        let variables: [String: String] = Dictionary(pairs, uniquingKeysWith: { a, _ in a })
        #expect(variables["ORL_API_URL"] == api && variables["OPENAI_BASE_URL"] == api + "/v1")
        #expect(variables["OPENAI_API_KEY"] == variables["ORL_TOKEN"] && variables["ORL_TOKEN"]?.count == 64)

        // A second controller for the same state refuses to run.
        let second = try h.orlctl(["controller"])
        #expect(second.status == 2)
        #expect(second.stderr == "orlctl: error: a controller already runs for \(h.state) (pid \(controller.processIdentifier))\n")

        // A killed agent is restarted (after the first backoff, about a second).
        kill(first["a"]!, SIGKILL)
        #expect(await waitUntil { h.agents()["a"].map { $0.count == 1 && $0[0] != first["a"] } == true }, "\(h.log())")
        #expect(h.agents()["b"] == [first["b"]!])
        #expect(h.log().contains("started Agent/a pid"))

        try await h.stopController()
        #expect(controller.terminationStatus == 0)
        #expect(h.agents().isEmpty)
        #expect(try h.orlctl(["controller", "stop"]).status == 1)
    }

    @Test func specChangesSuspendAndPruneTouchOnlyTheirAgent() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "b"), .init(name: "c")])
        try h.startController()
        let first = try await h.waitForAgents(["a", "b", "c"], "after start")

        try h.apply([.init(name: "a"), .init(name: "b", env: "v2"), .init(name: "c")])
        let changed = try await h.waitForAgents(["a", "b", "c"], "after the change")
        #expect(await waitUntil { h.agents()["b"] != [first["b"]!] && h.agents()["b"]?.count == 1 }, "\(h.log())")
        #expect(changed["a"] == first["a"] && changed["c"] == first["c"])

        try h.apply([.init(name: "a"), .init(name: "b", env: "v2"), .init(name: "c", suspend: true)])
        #expect(await waitUntil { h.agents()["c"] == nil }, "\(h.log())")

        try h.apply([.init(name: "b", env: "v2"), .init(name: "c", suspend: true)], prune: true)
        #expect(await waitUntil { h.agents()["a"] == nil }, "\(h.log())")
        let after = try await h.waitForAgents(["b"], "after suspend and prune")
        // The controller's events say why each was stopped (Stopped lands with the next pass).
        func seen() -> Set<String> {
            guard let output = try? h.orlctl(["events", "-o", "json"]).stdout,
                let json = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
                let events = json["events"] as? [[String: Any]]
            else { return [] }
            return Set(
                events.compactMap { event -> String? in
                    guard let name = (event["object"] as? [String: Any])?["name"] as? String, let reason = event["reason"] as? String
                    else { return nil }
                    return "\(name) \(reason)"
                })
        }
        #expect(await waitUntil { seen().isSuperset(of: ["b Restarting", "c Suspended", "a Removed", "a Stopped"]) }, "\(seen().sorted())")
        #expect(after["b"] == h.agents()["b"]?.first)
        try await h.stopController()
        #expect(h.agents().isEmpty)
    }

    @Test func anAgentThatCannotStartIsStalledAndBlocksNoOther() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "broken", command: "/nonexistent/agent")])
        try h.startController()
        _ = try await h.waitForAgents(["a"], "after start")
        #expect(
            await waitUntil {
                guard let r = try? h.orlctl(["get", "agent", "broken", "-o", "json"]),
                    let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
                else { return false }
                let conditions = (json["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
                return conditions.contains {
                    $0["type"] as? String == "Stalled" && $0["status"] as? String == "True"
                        && ($0["message"] as? String ?? "").contains("/nonexistent/agent")
                }
            }, "\(h.log())")
        #expect(await waitUntil { h.log().contains("error starting Agent/broken") }, "\(h.log())")
        // Each failed start is a Warning in the store, and each backoff after it too.
        func reasons() -> [String] {
            guard let output = try? h.orlctl(["events", "--for", "agent/broken", "-o", "json"]).stdout,
                let json = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
                let events = json["events"] as? [[String: Any]]
            else { return [] }
            return events.filter { $0["type"] as? String == "Warning" }.compactMap { $0["reason"] as? String }
        }
        #expect(
            await waitUntil { reasons().filter { $0 == "BackOff" }.count >= 2 && reasons().filter { $0 == "FailedToStart" }.count >= 2 },
            "\(reasons())")
        try await h.stopController()
        #expect(h.agents().isEmpty)
    }

    @Test func aNewControllerAdoptsTheAgentsOfAKilledOne() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "b")])
        let controller = try h.startController()
        let first = try await h.waitForAgents(["a", "b"], "after start")
        // The controller records a process at the end of the pass that started it; a kill
        // before that write is the (known) window this test is not about.
        #expect(
            await waitUntil {
                let listed = (try? h.orlctl(["get", "agents"]).stdout) ?? ""
                // A sandboxed agent's program is the child of the sandbox's first process,
                // which is the process the controller records.
                return first.values.allSatisfy { listed.contains("  \($0)  ") || listed.contains("  \(parentPID(of: $0))  ") }
            })

        kill(controller.processIdentifier, SIGKILL)
        controller.waitUntilExit()
        #expect(h.agents() == first.mapValues { [$0] })

        try h.startController(log: "second.log")
        #expect(await waitUntil { h.log("second.log").components(separatedBy: " adopted ").count == 3 }, "\(h.log("second.log"))")
        // Two more turns of its loop after the pass that reconciled what it adopted: a duplicate
        // would have been started by then.
        #expect(await h.passes(2, log: "second.log"), "\(h.log("second.log"))")
        #expect(h.agents() == first.mapValues { [$0] }, "\(h.log("second.log"))")
        #expect(!h.log("second.log").contains("started"))
        try await h.stopController()
        #expect(h.agents().isEmpty)
    }
}

extension ControllerCommandTests {
    /// A controller killed between a batch's spawns and the write that records them
    /// leaves processes no record names; here one is made by hand, with the environment
    /// the controller gives its agents, in a session of its own and with init as its
    /// parent, as such a process is. The next controller must stop it and run the agent
    /// once, not twice.
    /// `apply`, `secret set` and `sync` wake the controller with SIGUSR1 as soon as its lock
    /// names it, which is before its handler is set up: a wake in that window must not end
    /// it (SIGUSR1's default action). Waked without pause from the moment the lock holds
    /// its PID, it comes up and runs its agent.
    @Test func wakesFromTheMomentItHoldsItsLockDoNotEndAController() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a")])
        let controller = try h.startController()
        let pid = controller.processIdentifier
        let lock = h.state + "/controller.lock"
        #expect(
            await waitUntil(seconds: 30) {
                (try? String(contentsOfFile: lock, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "\(pid)"
                    || !controller.isRunning
            })
        var sent = 0
        let until = ContinuousClock.now + .seconds(1)
        while ContinuousClock.now < until && controller.isRunning {
            kill(pid, SIGUSR1)
            sent += 1
            usleep(200)
        }
        #expect(controller.isRunning, "the controller ended after \(sent) wakes: status \(controller.terminationStatus)\n\(h.log())")
        _ = try await h.waitForAgents(["a"], "the agent runs")
        try await h.stopController()
    }

    @Test func aNewControllerStopsTheAgentsAKilledOneDidNotRecord() async throws {
        let h = try Harness()
        try h.apply([.init(name: "a"), .init(name: "b")])
        let directory = h.agentsDirectory + "a"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // -f: setsid always forks, so the process leads a session of its own and its parent exits.
        let command =
            "cd '\(directory)' && env -i ORL_STATE_DIR='\(h.state)' ORL_AGENT=a ORL_NAMESPACE=default PATH=/usr/bin:/bin "
            + "setsid -f /bin/sh -c 'echo $$ > ../a.orphan; exec sleep 1000' </dev/null >/dev/null 2>&1"
        #expect(system(command) == 0)
        var orphan: Int32 = 0
        #expect(
            await waitUntil {
                orphan =
                    Int32(((try? String(contentsOfFile: h.agentsDirectory + "a.orphan", encoding: .utf8)) ?? "").filter(\.isNumber)) ?? 0
                return orphan > 0 && h.agents()["a"] == [orphan]
            })
        try #require(orphan > 0)
        // Not adopted, nor left running beside a new one: stopped, then `a` runs once.
        try h.startController()
        let running = try await h.waitForAgents(["a", "b"], "after the unrecorded process is stopped")
        #expect(running["a"] != orphan)
        #expect(kill(orphan, 0) != 0 || isZombie(orphan), "the unrecorded process \(orphan) still runs\n\(h.log())")
        #expect(h.log().contains("stopping Agent/a") && h.log().contains("not recorded"), "\(h.log())")
        #expect(!h.log().contains(" adopted "), "\(h.log())")
        try await h.stopController()
        #expect(h.agents().isEmpty)
    }
}

/// Whether `pid` is a zombie (exited, not reaped yet).
func isZombie(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
        return false
    }
    return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
}

/// The parent of `pid`, from /proc (0 when it cannot be read).
func parentPID(of pid: Int32) -> Int32 {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
        return 0
    }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) ?? 0 : 0
}

/// `apply` starts the controller the applied agents need, once.
@Suite(.serialized) struct ApplyStartsTheControllerTests {
    typealias Harness = ControllerCommandTests.Harness

    @Test func applyStartsADetachedControllerWhenNoneRuns() async throws {
        let h = try Harness()
        try h.work.write("fleet/fleet.yaml", h.manifests([.init(name: "a")]))
        func apply(_ extra: [String] = []) throws -> Orlctl.Result {
            try Orlctl.run(["apply", "-f", "fleet", "--state", h.state] + extra, in: h.work.url, environment: ["ORL_NO_CONTROLLER": ""])
        }
        let optedOut = try apply(["--no-controller"])
        #expect(optedOut.status == 0 && !optedOut.stdout.contains("controller started"), "\(optedOut.stdout)")
        #expect(try h.orlctl(["controller", "stop"]).status == 1, "no controller runs")

        let first = try apply()
        #expect(first.status == 0)
        #expect(first.stdout.contains("controller started (pid "), "\(first.stdout)\(first.stderr)")
        let pid = try #require(
            Int32(first.stdout.split(separator: "(pid ").last?.prefix { $0.isNumber } ?? ""), "\(first.stdout)")
        h.detached.append(pid)
        _ = try await h.waitForAgents(["a"], "after apply")

        let again = try apply()
        #expect(again.status == 0 && !again.stdout.contains("controller started"), "one controller is enough")
        try await h.stopController()
    }
}
