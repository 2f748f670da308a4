import AsyncHTTPClient
import Foundation
import Glibc
import NIOCore
import NIOHTTP1
import OrlCore
import OrlJSON
import OrlRuntime
import OrlServer
import OrlStore
import OrlYAML
import Synchronization
import Testing

/// stdio MCP servers that orl runs itself: a real server (the official `mcp` SDK on its
/// stdio transport, stdio_server.py) started by a real `ProcessRuntime` in its sandbox,
/// called by the SDK's client through orl's `/mcp`. The tests run as root (the sandbox
/// needs it), as the controller does.
@Suite(.serialized) struct McpStdioTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("stdio_server.py").path

    static func fleet() -> String {
        """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, pricing: {input: 1, output: 1}}]
        ---
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: notes}
        spec:
          type: mcp
          mcp:
            command: {command: "\(McpServerTests.python)", args: ["\(fixture)"]}
            credentialSecret: notes-token
            credentialEnv: NOTES_TOKEN
        ---
        # The same program unconfined: what the sandbox takes away, it can do.
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: open}
        spec:
          type: mcp
          mcp:
            command: {command: "\(McpServerTests.python)", args: ["\(fixture)"]}
            isolation: none
        ---
        # The same program on a short leash.
        apiVersion: orl.dev/v1
        kind: Tool
        metadata: {name: tight}
        spec:
          type: mcp
          mcp:
            command: {command: "\(McpServerTests.python)", args: ["\(fixture)"]}
            resources: {memory: 256Mi, pids: 16, cpu: 0.5}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: a}
        spec: {model: sim/small, runtime: {command: /bin/true}, tools: [notes/whoami, notes/connect, open/connect, tight/spawn, tight/hog]}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: b}
        spec: {model: sim/small, runtime: {command: /bin/true}, tools: [notes/whoami]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: careful}
        spec:
          appliesTo: {agents: [b]}
          requireApproval: {tools: [notes/whoami]}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: notes}
        spec:
          appliesTo: {agents: [a, b]}
          allow: {models: ["sim/*"], tools: ["notes/*", "open/*", "tight/*"]}
          deny: {tools: [notes/forget]}
        """
    }

    final class Harness: Sendable {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("orl-mcp-stdio-\(UUID().uuidString)").path
        let gateway: Gateway
        let api: AgentAPI
        let events = McpServerTests.Events()
        nonisolated(unsafe) var url = ""
        nonisolated(unsafe) var server: Task<Void, any Error>?

        static let secret: @Sendable (SecretID) -> String? = { $0.name == "notes-token" ? "s3cret-notes" : nil }

        /// Pins each server as `orlctl mcp pin` does (running it as the controller
        /// would), then serves the fleet.
        init(backoff: Duration = .seconds(1), approvalTimeout: Duration = .seconds(120)) async throws {
            var read = ManifestReader().read(YAMLParser().parse(McpStdioTests.fleet(), file: "fleet.yaml"))
            let unpinned = ManifestValidation.validate(read).fleet
            let pinning = McpStdioServers(launcher: ProcessRuntime())
            let upstream = McpUpstream(stdio: pinning)
            var servers: [(ResourceID, [Node])] = []
            for tool in unpinned.resources(of: .tool) {
                let spec = try #require(tool.tool)
                let endpoint = try #require(
                    McpUpstream.Endpoint.server(
                        tool.id, spec: spec, origin: nil, credential: Self.secret(SecretID(name: "notes-token")),
                        stateDirectory: directory, workingDirectory: directory + "/pin/" + tool.metadata.name,
                        logFile: directory + "/pin/\(tool.metadata.name).log"))
                servers.append((tool.id, try await upstream.listTools(endpoint)))
            }
            await pinning.stopAll()
            read.mcpLocks.append(try JSONParser.parse(McpLock.render(servers), file: McpLock.fileName))
            let report = ManifestValidation.validate(read)
            precondition(report.isValid, "\(report.diagnostics.map(\.message))")
            let store = try SQLiteStateStore(directory: directory)
            _ = try ApplyOperation.apply(
                report.fleet, to: store, options: ApplyOptions(source: "test", appliedBy: "test"), now: McpServerTests.Harness.clock())
            let events = self.events
            gateway = Gateway(
                store: store, providerKey: { _ in nil }, clock: McpServerTests.Harness.clock,
                log: { event in events.list.withLock { $0.append(event) } }, onExhausted: {})
            gateway.update(
                fleet: report.fleet,
                tokens: [
                    ResourceID(kind: "Agent", name: "a"): AgentToken.digest("token-a"),
                    ResourceID(kind: "Agent", name: "b"): AgentToken.digest("token-b"),
                ],
                now: McpServerTests.Harness.clock())
            var configuration = AgentAPI.Configuration(stateDirectory: directory)
            configuration.mcpFirstBackoff = backoff
            configuration.mcpApprovalTimeout = approvalTimeout
            api = AgentAPI(
                gateway: gateway, store: try SQLiteStateStore(directory: directory), waiters: TaskWaiters(), commands: ProcessRuntime(),
                secret: Self.secret, configuration: configuration)
            let started = try await APIServer(gateway: gateway, agents: api, port: 0).start()
            url = started.url
            server = started.task
        }

        /// Stops the API, and with it (its `run` ends) every server it started.
        func stop() async {
            server?.cancel()
            _ = await server?.result
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// The official client as agent a.
        func client(_ arguments: [String]) async throws -> Any { try await McpClient.run(url, token: "token-a", arguments) }

        /// One tools/call as a bare JSON-RPC POST (no client start-up: for timing).
        func call(_ tool: String, _ arguments: String = "{}", token: String = "token-a") async throws -> [String: Any] {
            var request = HTTPClientRequest(url: url + "/mcp")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(
                ByteBuffer(
                    string:
                        #"{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "\#(tool)", "arguments": \#(arguments)}}"#)
            )
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            let body = try await response.body.collect(upTo: 1 << 20)
            let object = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
            return try #require(object)
        }

        func text(_ reply: [String: Any]) -> String {
            let content = (reply["result"] as? [String: Any])?["content"] as? [[String: Any]] ?? []
            return content.compactMap { $0["text"] as? String }.joined()
        }

        func messages(_ reason: ControllerEvent.Reason) -> [String] {
            events.list.withLock { $0.filter { $0.reason == reason }.map(\.message) }
        }
    }

    /// A TCP listener on the host's loopback, accepting nothing: a connect succeeds
    /// only from the host's network namespace.
    final class Listener {
        let fd: Int32
        let port: Int

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.fd = fd
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
            }
            guard bound, listen(fd, 16) == 0 else { throw CocoaError(.fileWriteUnknown) }
            port = Int(UInt16(bigEndian: address.sin_port))
        }

        deinit { close(fd) }
    }

    @Test func aStdioServerRunsInItsSandboxAndAnAgentCallsItThroughMcp() async throws {
        let h = try await Harness()
        let listed = try #require(try await h.client(["list"]) as? [String])
        #expect(listed.contains("notes__whoami") && listed.contains("open__connect"), "\(listed)")
        #expect(!listed.contains("notes__forget"), "a denied tool is not offered: \(listed)")

        // Started at its first use, in its sandbox: an unprivileged uid, the credential
        // in its environment, its own directory.
        let whoami = try #require(try await h.client(["call", "notes__whoami"]) as? [String: Any])
        #expect(whoami["isError"] as? Bool == false, "\(whoami)")
        let me = try #require(
            try JSONSerialization.jsonObject(with: Data((whoami["text"] as? String ?? "").utf8)) as? [String: Any], "\(whoami)")
        #expect(me["uid"] as? Int == 65534, "\(me)")
        #expect(me["credential"] as? Bool == true, "\(me)")
        #expect(me["cwd"] as? String == h.directory + "/mcp/default/notes", "\(me)")
        let unconfined = try #require(try await h.client(["call", "open__whoami"]) as? [String: Any])
        #expect((unconfined["text"] as? String ?? "").contains("\"uid\": 0,"), "\(unconfined)")
        #expect(h.messages(.started).contains { $0.contains("MCP server notes started in a strict sandbox") }, "\(h.messages(.started))")

        // The credential never reaches the agent, even when the server says it.
        let echoed = try #require(try await h.client(["call", "notes__echo_credential"]) as? [String: Any])
        #expect((echoed["text"] as? String ?? "").contains("(sensitive)"), "\(echoed)")
        #expect(!(echoed["text"] as? String ?? "").contains("s3cret-notes"), "\(echoed)")

        // A tool a Policy denies is refused before the server hears of it.
        let denied = try #require(try await h.client(["call", "notes__forget"]) as? [String: Any])
        #expect(denied["error"] as? Int == -32003, "\(denied)")

        // No network: the host's loopback is out of reach, which it is not for the same
        // server unconfined.
        let listener = try Listener()
        let blocked = try #require(try await h.client(["call", "notes__connect", #"{"port": \#(listener.port)}"#]) as? [String: Any])
        #expect((blocked["text"] as? String ?? "").hasPrefix("failed"), "\(blocked)")
        let reached = try #require(try await h.client(["call", "open__connect", #"{"port": \#(listener.port)}"#]) as? [String: Any])
        #expect(reached["text"] as? String == "connected", "\(reached)")

        // The state directory is not there for it.
        try "hello".write(toFile: h.directory + "/probe.txt", atomically: true, encoding: .utf8)
        let hidden = try #require(try await h.client(["call", "notes__read", #"{"path": "\#(h.directory)/probe.txt"}"#]) as? [String: Any])
        #expect((hidden["text"] as? String ?? "").hasPrefix("failed"), "\(hidden)")
        let seen = try #require(try await h.client(["call", "open__read", #"{"path": "\#(h.directory)/probe.txt"}"#]) as? [String: Any])
        #expect(seen["text"] as? String == "read: hello", "\(seen)")

        // Its standard error is in its log.
        let log = try String(contentsOfFile: h.directory + "/logs/mcp/default/notes.log", encoding: .utf8)
        #expect(log.contains("notes server starting"), "\(log)")
        // One process per server, whatever the number of calls.
        #expect(h.api.stdioServers().count == 2)
        #expect(h.messages(.started).count == 2, "\(h.messages(.started))")

        let running = h.api.stdioServers().values.map(\.pid)
        await h.stop()
        // Gone with the API.
        for pid in running { #expect(kill(pid, 0) != 0) }
    }

    /// A server that forks past its pids limit is refused the forks, and one that
    /// fills memory past its limit is killed in its cgroup and reported as such: the
    /// controller and the other servers go on. `describe` shows the limits (defaults
    /// for a strict server that sets none).
    @Test func aServerPastItsLimitsIsContainedAndReported() async throws {
        let h = try await Harness()
        let spawned = try await h.call("tight__spawn", #"{"count": 64}"#)
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(h.text(spawned).utf8)) as? [String: Any], "\(spawned)")
        let started = try #require(report["started"] as? Int, "\(report)")
        #expect(started > 0 && started < 16, "\(report)")
        #expect((report["error"] as? String ?? "").contains("Resource temporarily unavailable"), "\(report)")
        // Still up: refused forks, not killed.
        #expect(h.text(try await h.call("tight__whoami")).contains("65534"))

        let hogged = try await h.call("tight__hog", #"{"megabytes": 1024}"#)
        #expect((hogged["result"] as? [String: Any])?["isError"] as? Bool == true, "\(hogged)")
        #expect(h.text(hogged).contains("the memory limit was reached"), "\(h.text(hogged))")
        #expect(h.messages(.exited).contains { $0.contains("MCP server tight") && $0.contains("the memory limit was reached") })
        // Contained: the API and the other servers carry on.
        #expect(h.text(try await h.call("notes__whoami")).contains("65534"))

        // The Tools' status says what confines them.
        let store = try SQLiteStateStore(directory: h.directory)
        func sandboxed(_ name: String) async throws -> ResourceStatus.Condition? {
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(10)
            while clock.now < deadline {
                let status = try store.read { reader throws(StoreError) in try reader.status(for: ResourceID(kind: "Tool", name: name)) }
                if let found = status?.condition("Sandboxed") { return found }
                try await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
        let tight = try #require(try await sandboxed("tight"))
        #expect(tight.status == .true && tight.message.contains("memory 268435456 bytes (cgroup"), "\(tight.message)")
        #expect(tight.message.contains("pids 16 (cgroup") && tight.message.contains("cpu 0.5"), "\(tight.message)")
        let notes = try #require(try await sandboxed("notes"))
        #expect(notes.message.contains("memory 1073741824 bytes") && notes.message.contains("pids 128"), "\(notes.message)")
        #expect(notes.message.contains("openFiles 1024"), "\(notes.message)")
        await h.stop()
    }

    @Test func aServerThatExitsIsStartedAgainAfterItsBackoff() async throws {
        let h = try await Harness(backoff: .seconds(2))
        let first = try await h.call("notes__whoami")
        #expect(h.text(first).contains("65534"), "\(first)")
        let crashed = try await h.call("notes__crash")
        #expect((crashed["result"] as? [String: Any])?["isError"] as? Bool == true, "\(crashed)")
        #expect(h.text(crashed).contains("exited with code 3") && h.text(crashed).contains("crashing on purpose"), "\(crashed)")
        // Within its backoff: refused at once, saying when it comes back.
        let early = try await h.call("notes__whoami")
        #expect(h.text(early).contains("orl starts it again"), "\(early)")
        #expect(h.messages(.exited).contains { $0.contains("not before 2s") }, "\(h.messages(.exited))")
        // Then started again by a call.
        let deadline = ContinuousClock.now + .seconds(30)
        var again: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            again = try await h.call("notes__whoami")
            if h.text(again).contains("65534") { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(h.text(again).contains("65534"), "\(again)")
        #expect(h.messages(.started).count == 2, "\(h.messages(.started))")
        await h.stop()
    }

    /// A Policy's requireApproval outside a workflow: each call waits for a person's
    /// decision (what `orlctl approve/deny call/ID` does), recorded with who and why,
    /// and is refused when none comes in time.
    @Test func aCallBehindAnApprovalWaitsForTheDecision() async throws {
        let h = try await Harness(approvalTimeout: .seconds(6))
        let store = try SQLiteStateStore(directory: h.directory)
        func nextPending() async throws -> ToolApproval {
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if let first = try store.pendingToolApprovals(namespace: nil).first { return first }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: "no call waits for approval"])
        }
        let approving = Task { () async throws -> String in h.text(try await h.call("notes__whoami", token: "token-b")) }
        let first = try await nextPending()
        #expect(first.tool == "notes/whoami" && first.agent.name == "b" && first.arguments == "{}", "\(first)")
        // What a person runs: the call is listed, and decided by its reference.
        let pending = try McpServerTests.orlctl(["runs", "--pending-approval", "--state", h.directory])
        #expect(pending.contains("call/\(first.id)") && pending.contains("notes/whoami"), "\(pending)")
        let said = try McpServerTests.orlctl(["approve", "call/\(first.id)", "--reason", "looks fine", "--state", h.directory])
        #expect(said.contains("approved"), "\(said)")
        let approved = try await approving.value
        #expect(approved.contains("65534"), "\(approved)")
        // Decided once: a second decision is refused.
        #expect(throws: RunError.self) {
            try store.decide(first.id, approve: false, by: "bob", reason: nil, now: McpServerTests.Harness.clock())
        }

        let denying = Task { () async throws -> String in
            let reply = try await h.call("notes__whoami", token: "token-b")
            let error = reply["error"] as? [String: Any]
            return "\(error?["code"] as? Int ?? 0) \(error?["message"] as? String ?? "")"
        }
        let second = try await nextPending()
        _ = try McpServerTests.orlctl(["deny", "call/\(second.id)", "--reason", "not now", "--state", h.directory])
        let denied = try await denying.value
        #expect(denied.hasPrefix("-32003 ") && denied.contains("was denied by ") && denied.contains(": not now"), "\(denied)")

        // Nobody decides: refused at the deadline, and recorded as Expired.
        let expired = try await h.call("notes__whoami", token: "token-b")
        let refusal = try #require(expired["error"] as? [String: Any], "\(expired)")
        #expect((refusal["message"] as? String ?? "").contains("no one approved it within 6s"), "\(refusal)")
        #expect(try store.pendingToolApprovals(namespace: nil).isEmpty)

        let events = try store.read { reader throws(StoreError) in
            try reader.events(for: ResourceID(kind: "Agent", name: "b"), limit: 20)
        }.map { "\($0.reason): \($0.message)" }
        #expect(events.contains { $0.hasPrefix("ToolApproved:") && $0.contains(": looks fine") }, "\(events)")
        #expect(events.contains { $0.hasPrefix("ToolDenied:") && $0.contains(": not now") }, "\(events)")
        #expect(events.contains { $0.hasPrefix("ToolApprovalExpired:") }, "\(events)")
        #expect(events.filter { $0.hasPrefix("ToolApprovalRequested:") }.count == 3, "\(events)")
        // Agent a, without the requireApproval, calls it at once.
        #expect(h.text(try await h.call("notes__whoami")).contains("65534"))
        await h.stop()
    }
}
