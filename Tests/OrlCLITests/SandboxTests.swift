import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Agents under `isolation: strict` (the default), end to end: the real controller,
/// real namespaces, an agent program that tries every way out (Fixtures/escape_agent.py)
/// and reports what it could do, a test host in a network namespace of its own.
@Suite(.serialized) struct SandboxTests {
    static let fixtures = AgentRunsTests.fixtures

    /// `sh -c`, waited for; its status.
    @discardableResult
    static func shell(_ command: String) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// A host that looks remote: a network namespace joined to ours by a veth pair,
    /// with a TCP listener; removed when this goes away.
    final class RemoteHost {
        let namespace: String
        let address: String
        let port = 18_080
        let listener: Process

        init() throws {
            let tag = Int.random(in: 1...250)
            namespace = "orl-sbx-\(getpid())-\(tag)"
            let (outside, inside) = ("osb\(getpid() % 10000)h", "osb\(getpid() % 10000)n")
            address = "10.231.\(tag).2"
            let commands = [
                "ip netns add \(namespace)",
                "ip link add \(outside) type veth peer name \(inside)",
                "ip link set \(inside) netns \(namespace)",
                "ip addr add 10.231.\(tag).1/30 dev \(outside)", "ip link set \(outside) up",
                "ip netns exec \(namespace) ip addr add \(address)/30 dev \(inside)",
                "ip netns exec \(namespace) ip link set \(inside) up", "ip netns exec \(namespace) ip link set lo up",
            ]
            for command in commands where SandboxTests.shell(command) != 0 {
                throw CommandFailure("cannot set up the test host: \(command) failed")
            }
            listener = Process()
            listener.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            listener.arguments = [
                "netns", "exec", namespace, "python3", "-c",
                "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                    + "s.bind(('\(address)',\(port)))\ns.listen(64)\nwhile True:\n  c,_=s.accept()\n  c.close()",
            ]
            listener.environment = ["PATH": "/root/.pyenv/shims:/usr/local/bin:/usr/bin:/bin", "HOME": "/root"]
            try listener.run()
            _ = (outside, inside)
            self.outsideLink = outside
        }
        let outsideLink: String

        deinit {
            if listener.isRunning { kill(listener.processIdentifier, SIGKILL) }
            SandboxTests.shell("ip link del \(outsideLink)")
            SandboxTests.shell("ip netns del \(namespace)")
        }
    }

    struct CommandFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Whether a TCP connection from the test (the host) succeeds.
    static func canConnect(_ host: String, _ port: Int) -> Bool {
        shell("python3 -c \"import socket; socket.create_connection(('\(host)', \(port)), timeout=2)\"") == 0
    }

    /// `unconfined`: the escaper (only) runs with `isolation: none`, for the control test.
    static func fleet(remote: String, loopback: Int, state: String, victim: String, unconfined: Bool = false) -> String {
        let library = Orlctl.packageRoot.appendingPathComponent("examples/agents").path
        return """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec:
              apiStyle: simulated
              models: [{name: small, maxOutputTokens: 10, pricing: {input: 1, output: 1}}]
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: shout}
            spec: {type: command, command: {command: /bin/echo, args: [HEY]}, timeout: 10s}
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: escaper, labels: {team: t}}
            spec:
              model: sim/small
              tools: [shout]
              runtime:
                command: python3
                args: ["\(fixtures)/escape_agent.py"]
                mounts: [{path: "\(library)"}]
                env: [{name: PYTHONUNBUFFERED, value: "1"}]
                gracePeriod: 2s
                isolation: \(unconfined ? "none" : "strict")
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: victim, labels: {team: t}}
            spec:
              model: sim/small
              runtime:
                command: /bin/sleep
                args: ["3600"]
                env: [{name: SECRET_MARKER, value: "\(victim)"}]
                gracePeriod: 1s
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: hog, labels: {team: t}}
            spec:
              model: sim/small
              runtime:
                command: python3
                args: ["\(fixtures)/hog.py"]
                restartPolicy: Never
                resources: {pids: 24, memory: 96Mi}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: team}
            spec:
              appliesTo: {selector: {matchLabels: {team: t}}}
              \(unconfined ? "" : "requireIsolation: strict")
              allow: {models: ["sim/*"], tools: [shout]}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: team}
            spec:
              appliesTo: {selector: {matchLabels: {team: t}}}
              limits: [{window: day, usd: 1000}]
            ---
            apiVersion: orl.dev/v1
            kind: Workflow
            metadata: {name: escape}
            spec:
              steps:
                - id: try
                  agent: escaper
                  tools: [shout]
                  inputs:
                    remote: {value: "\(remote)"}
                    loopback: {value: "\(loopback)"}
                    state: {value: "\(state)"}
                    victim: {value: "\(victim)"}
                    tool: {value: shout}
            """
    }

    /// The escape agent's run against a test host, a service on the host's loopback, a
    /// master key and a victim agent: the controller still runs, and what each probe
    /// could do comes back. `unconfined`: the escaper runs with `isolation: none`.
    static func escape(unconfined: Bool) async throws -> (h: AgentRunsTests.Harness, probes: [String: [String: Any]]) {
        let remote = try RemoteHost()
        let h = try AgentRunsTests.Harness()
        // A service on the host's loopback, as the state's other ports would be.
        let loopbackPortFile = h.work.url.appendingPathComponent("loopback.port").path
        try h.background(
            "/usr/bin/env",
            [
                "python3", "-c",
                "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(64)\n"
                    + "open(sys.argv[1],'w').write(str(s.getsockname()[1]))\nwhile True:\n  c,_=s.accept()\n  c.close()",
                loopbackPortFile,
            ], log: "loopback.log")
        #expect(await waitUntil(seconds: 30) { ((try? String(contentsOfFile: loopbackPortFile, encoding: .utf8)) ?? "").count > 0 })
        let loopback = try #require(Int(try String(contentsOfFile: loopbackPortFile, encoding: .utf8)))
        // Both listeners are reachable from the host: a refusal inside is the sandbox's doing.
        #expect(await waitUntil(seconds: 30) { canConnect(remote.address, remote.port) }, "the test host is not reachable from the host")
        #expect(canConnect("127.0.0.1", loopback))

        let victim = "victim-marker-\(UInt32.random(in: 0...UInt32.max))"
        try h.work.write(
            "fleet.yaml",
            fleet(remote: "\(remote.address):\(remote.port)", loopback: loopback, state: h.state, victim: victim, unconfined: unconfined))
        try h.apply("fleet.yaml")
        // A master key, as `secret set` leaves one.
        #expect(FileManager.default.createFile(atPath: h.state + "/master.key", contents: Data("k".utf8)))
        try h.startController()
        #expect(await waitUntil(seconds: 30) { ((try? h.orlctl(["get", "agent/victim"]).stdout) ?? "").contains("Running") })

        let id = try h.start("escape")
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"], seconds: 60) == "Succeeded")
        let probes = try #require(try h.output(id, "try")["probes"] as? [String: [String: Any]])
        // The remote host lives as long as the run needed it.
        withExtendedLifetime(remote) {}
        return (h, probes)
    }

    @Test func anAgentCannotGetOutButThroughOrl() async throws {
        let (h, probes) = try await Self.escape(unconfined: false)
        func could(_ name: String) -> Bool { probes[name]?["ok"] as? Bool ?? true }
        func detail(_ name: String) -> String { probes[name]?["detail"] as? String ?? "" }
        // (1) the network: nothing but orl.
        #expect(!could("remote"), "reached the test host: \(detail("remote"))")
        #expect(!could("loopback"), "reached the host's loopback: \(detail("loopback"))")
        // (2) the state and other agents.
        for probe in ["masterKey", "database", "token", "otherEnviron"] {
            #expect(!could(probe), "\(probe): \(detail(probe))")
        }
        // (3) writing: only its working directory (and its private /tmp).
        for probe in ["writeState", "writeUsr", "writeParent"] {
            #expect(!could(probe), "\(probe): \(detail(probe))")
        }
        #expect(could("writeWorkdir"), "\(detail("writeWorkdir"))")
        #expect(FileManager.default.fileExists(atPath: h.state + "/agents/default/escaper/own-file"))
        #expect(!FileManager.default.fileExists(atPath: "/tmp/orl-sandbox-escaped"))
        #expect(!FileManager.default.fileExists(atPath: h.state + "/escaped"))
        // Privileges.
        #expect(!could("ptrace") && !could("userns"), "\(detail("ptrace")) / \(detail("userns"))")
        #expect(detail("uid") == "65534")
        #expect(detail("pids") == "1 2", "its /proc shows only its init and itself: \(detail("pids"))")
        // (5) orl's ways out work.
        #expect(could("model"), "\(detail("model"))")
        #expect(could("tool") && detail("tool").contains("HEY"), "\(detail("tool"))")
        #expect(detail("apiURL").hasPrefix("http://127.0.0.1:"))

        // (4) limits: the hog's forks are refused, its memory contained, and the
        // controller says which limit ended it.
        #expect(
            await waitUntil(seconds: 60) { h.file("state/logs/default/hog.log").contains("fork refused") },
            "\(h.file("state/logs/default/hog.log"))")
        #expect(await waitUntil(seconds: 60) { h.file("controller.log").contains("exited Agent/hog") }, "\(h.file("controller.log"))")
        let hogExit = h.file("controller.log").split(separator: "\n").first { $0.contains("exited Agent/hog") } ?? ""
        #expect(hogExit.contains("memory limit") || h.file("state/logs/default/hog.log").contains("MemoryError"), "\(hogExit)")

        // What describe and get -o wide show.
        let described = try h.orlctl(["describe", "agent/escaper"]).stdout
        #expect(described.contains("Sandboxed") && described.contains("uid 65534") && described.contains("127.0.0.1:"), "\(described)")
        let wide = try h.orlctl(["get", "agents", "-o", "wide"]).stdout
        #expect(wide.contains("ISOLATION") && wide.contains("strict"), "\(wide)")
        try h.stopController()
    }

    /// The control: the same probes, run by the same agent with `isolation: none`, do
    /// get out. Without it, a probe that failed for an unrelated reason (a typo, a
    /// missing module) would pass the test above while proving nothing.
    @Test func withoutTheSandboxTheSameProbesGetOut() async throws {
        // Unconfined, it really writes these (as root): put the host back.
        defer { for path in ["/tmp/orl-sandbox-escaped", "/usr/escaped"] { unlink(path) } }
        let (h, probes) = try await Self.escape(unconfined: true)
        func could(_ name: String) -> Bool { probes[name]?["ok"] as? Bool ?? false }
        func detail(_ name: String) -> String { probes[name]?["detail"] as? String ?? "" }
        for probe in ["remote", "loopback", "masterKey", "database", "token", "otherEnviron", "writeParent", "writeUsr"] {
            #expect(could(probe), "unconfined, \(probe) should get out: \(detail(probe))")
        }
        #expect(detail("uid") == "0")
        #expect(could("model") && could("tool"))
        try h.stopController()
    }

    /// (7) A Policy that requires strict isolation makes `isolation: none` an error.
    @Test func unconfinedAgentsAreReportedAndCanBeForbidden() throws {
        let work = try TemporaryDirectory()
        let agent = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 1, output: 1}}]}
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: loose, labels: {team: t}}
            spec:
              model: sim/small
              runtime: {command: /bin/true, isolation: none}
            ---
            apiVersion: orl.dev/v1
            kind: Budget
            metadata: {name: team}
            spec:
              appliesTo: {selector: {matchLabels: {team: t}}}
              limits: [{window: day, usd: 1}]
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: team}
            spec:
              appliesTo: {selector: {matchLabels: {team: t}}}
              allow: {models: ["sim/*"]}

            """
        try work.write("warn.yaml", agent)
        let warned = try Orlctl.run(["validate", "-f", "warn.yaml"], in: work.url)
        #expect(warned.status == 0, "\(warned.stdout)\(warned.stderr)")
        #expect((warned.stdout + warned.stderr).contains("perm.unconfined"), "\(warned.stdout)\(warned.stderr)")

        try work.write("forbid.yaml", agent + "  requireIsolation: strict\n")
        let forbidden = try Orlctl.run(["validate", "-f", "forbid.yaml"], in: work.url)
        #expect(forbidden.status == 1, "\(forbidden.stdout)\(forbidden.stderr)")
        let said = forbidden.stdout + forbidden.stderr
        #expect(said.contains("perm.unconfined") && said.contains("loose") && said.contains("forbid.yaml:"), "\(said)")

        let explained = try Orlctl.run(["explain", "agent/loose", "-f", "warn.yaml"], in: work.url)
        #expect(explained.stdout.contains("Isolation:") && explained.stdout.contains("none"), "\(explained.stdout)\(explained.stderr)")
    }
}
