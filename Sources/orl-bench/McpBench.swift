import ArgumentParser
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

/// `orl-bench mcp`: what orl's `/mcp` adds to a `tools/call`. The issues server of
/// examples/mcp (the official `mcp` Python SDK over streamable HTTP) is called directly
/// and through orl's API on loopback (policy check, pin check, credential injection,
/// forwarding), one call at a time, alternating, so both see the same server and load.
struct McpBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp", abstract: "tools/call through orl's /mcp against calling the MCP server directly.")

    @Option(help: "Calls per target.")
    var calls = 500

    @Option(help: "The Python with the mcp SDK (scripts/install-deps makes it).")
    var python = (ProcessInfo.processInfo.environment["ORL_MCP_VENV"] ?? NSHomeDirectory() + "/.cache/orl/mcp-venv") + "/bin/python"

    @Option(help: "The MCP server to start.")
    var server = "examples/mcp/issues_server.py"

    func run() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [server, "--port", "0", "--token", "bench-secret"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(out.fileHandleForReading.fileDescriptor, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        guard let port = Int(String(decoding: line, as: UTF8.self).dropFirst("listening on ".count)) else {
            throw ValidationError("the MCP server did not start: \(String(decoding: line, as: UTF8.self))")
        }
        let upstreamURL = "http://127.0.0.1:\(port)/mcp"
        let serverID = ResourceID(kind: "Tool", name: "issues")
        let endpoint = McpUpstream.Endpoint(
            server: serverID, url: upstreamURL, headers: [:], credential: "bench-secret", timeout: .seconds(10))
        let direct = McpUpstream()
        let tools = try await direct.listTools(endpoint)

        let fleet = """
            apiVersion: orl.dev/v1
            kind: ModelProvider
            metadata: {name: sim}
            spec: {apiStyle: simulated, models: [{name: small, pricing: {input: 1, output: 1}}]}
            ---
            apiVersion: orl.dev/v1
            kind: Tool
            metadata: {name: issues}
            spec: {type: mcp, mcp: {url: "\(upstreamURL)", credentialSecret: issues-token}}
            ---
            apiVersion: orl.dev/v1
            kind: Agent
            metadata: {name: worker}
            spec: {model: sim/small, runtime: {command: /bin/true}, tools: [issues/list_issues]}
            ---
            apiVersion: orl.dev/v1
            kind: Policy
            metadata: {name: all}
            spec: {appliesTo: {agents: [worker]}, allow: {models: ["sim/*"], tools: ["issues/*"]}}
            """
        var read = ManifestReader().read(YAMLParser().parse(fleet, file: "bench.yaml"))
        read.mcpLocks.append(try JSONParser.parse(McpLock.render([(serverID, tools)]), file: McpLock.fileName))
        let report = ManifestValidation.validate(read)
        guard report.isValid else { throw ValidationError("the bench fleet is not valid: \(report.diagnostics.prefix(3).map(\.message))") }
        let directory = NSTemporaryDirectory() + "orl-bench-mcp-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SQLiteStateStore(directory: directory)
        let clock: @Sendable () -> Timestamp = { Timestamp(milliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded())) }
        _ = try ApplyOperation.apply(report.fleet, to: store, options: ApplyOptions(source: "bench", appliedBy: "orl-bench"), now: clock())
        let token = "orl-bench-agent-token"
        let gateway = Gateway(store: store, providerKey: { _ in nil }, clock: clock, log: { _ in }, onExhausted: {})
        gateway.update(fleet: report.fleet, tokens: [ResourceID(kind: "Agent", name: "worker"): AgentToken.digest(token)], now: clock())
        let apiStore = try SQLiteStateStore(directory: directory)
        let api = AgentAPI(
            gateway: gateway, store: apiStore, waiters: TaskWaiters(), commands: ProcessRuntime(),
            secret: { $0.name == "issues-token" ? "bench-secret" : nil }, configuration: AgentAPI.Configuration(stateDirectory: directory))
        let (url, serverTask) = try await APIServer(gateway: gateway, agents: api, port: 0).start()
        defer { serverTask.cancel() }

        let body = #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"issues__list_issues","arguments":{}}}"#
        func viaOrl() async throws {
            var request = HTTPClientRequest(url: url + "/mcp")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "Accept", value: "application/json, text/event-stream")
            request.body = .bytes(ByteBuffer(string: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            let answer = try await response.body.collect(upTo: 1 << 20)
            guard response.status == .ok, String(buffer: answer).contains("\"result\"") else {
                throw ValidationError("orl answered \(response.status.code): \(String(buffer: answer))")
            }
        }
        func directly() async throws { _ = try await direct.callTool(endpoint, name: "list_issues", arguments: .object([])) }

        for _ in 0..<50 {
            try await viaOrl()
            try await directly()
        }
        var through: [Double] = []
        var straight: [Double] = []
        for _ in 0..<calls {
            var start = ContinuousClock.now
            try await directly()
            straight.append(Self.milliseconds(ContinuousClock.now - start))
            start = ContinuousClock.now
            try await viaOrl()
            through.append(Self.milliseconds(ContinuousClock.now - start))
        }
        straight.sort()
        through.sort()
        let p = { (values: [Double], q: Double) in values[min(values.count - 1, Int(Double(values.count) * q))] }
        print(
            "mcp: tools/call of the issues server (mcp \(Self.sdkVersion(python)) Python SDK, streamable HTTP), \(calls) calls each, one at a time"
        )
        print(String(format: "  direct:           p50 %.3f ms, p99 %.3f ms", p(straight, 0.5), p(straight, 0.99)))
        print(String(format: "  through orl /mcp: p50 %.3f ms, p99 %.3f ms", p(through, 0.5), p(through, 0.99)))
        print(
            String(
                format: "  added by orl:     p50 %+.3f ms, p99 %+.3f ms (target: p50 under 1 ms)", p(through, 0.5) - p(straight, 0.5),
                p(through, 0.99) - p(straight, 0.99)))
    }

    static func milliseconds(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }

    static func sdkVersion(_ python: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", "import importlib.metadata as m; print(m.version('mcp'))"]
        let out = Pipe()
        process.standardOutput = out
        guard (try? process.run()) != nil else { return "?" }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
