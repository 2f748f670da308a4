import Foundation
import OrlCore
import OrlStore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The MCP example end to end, as its docs tell it (docs/mcp.md): the issues server
/// (the official `mcp` SDK) behind a real `orlctl controller`, `orlctl mcp pin` against
/// the committed lock file, and the reference agent with MCP tools
/// (examples/agents/mcp_agent.py) filing an issue through orl's `/mcp`, from its
/// sandbox, with the credential injected by orl.
@Suite(.serialized) struct McpAgentTests {
    static var python: String {
        (ProcessInfo.processInfo.environment["ORL_MCP_VENV"] ?? NSHomeDirectory() + "/.cache/orl/mcp-venv") + "/bin/python"
    }

    @Test func theReferenceAgentFilesAnIssueThroughMcp() async throws {
        let h = try AgentRunsTests.Harness()
        let example = Orlctl.packageRoot.appendingPathComponent("examples/mcp")
        // The issues server, on a port of its own (the example's fleet says 8931).
        let out = h.work.url.appendingPathComponent("server.out").path
        let server = try h.background(
            Self.python, [example.appendingPathComponent("issues_server.py").path, "--port", "0", "--token", "issues-s3cret"],
            log: "server.out")
        var announced: Int?
        #expect(
            await waitUntil(seconds: 30) {
                let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
                announced = text.split(separator: "\n").first { $0.hasPrefix("listening on ") }.flatMap { Int($0.dropFirst(13)) }
                return announced != nil
            }, "the issues server did not start: \(h.file("server.out"))")
        defer { kill(server.processIdentifier, SIGKILL) }
        let port = try #require(announced)

        // The example as committed, but for the server's port.
        let fleet = try String(contentsOf: example.appendingPathComponent("fleet.yaml"), encoding: .utf8)
        try h.work.write("mcp/fleet.yaml", fleet.replacingOccurrences(of: "127.0.0.1:8931", with: "127.0.0.1:\(port)"))
        try h.work.write(
            "mcp/mcp.lock.json", try String(contentsOf: example.appendingPathComponent("mcp.lock.json"), encoding: .utf8))
        try FileManager.default.createDirectory(atPath: h.state + "/workspace", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: h.state + "/workspace/examples", withDestinationPath: Orlctl.packageRoot.appendingPathComponent("examples").path)

        let secret = try h.orlctl(
            ["secret", "set", "issues-token", "-n", "mcp", "--from-env", "ISSUES_TOKEN"], environment: ["ISSUES_TOKEN": "issues-s3cret"])
        #expect(secret.status == 0, "\(secret.stderr)")
        // The committed pins are what the server serves: nothing to change.
        let pinned = try h.orlctl(["mcp", "pin", "-f", h.work.url.appendingPathComponent("mcp").path])
        #expect(pinned.status == 0, "examples/mcp/mcp.lock.json is stale: \(pinned.stdout)\(pinned.stderr)")

        try h.apply(h.work.url.appendingPathComponent("mcp").path)
        try h.startController()
        let started = try h.orlctl([
            "run", "workflow/file-issue", "-n", "mcp", "--input", "title=Broken build", "--input", "body=CI is red",
        ])
        #expect(started.status == 0, "\(started.stderr)")
        let id = String(started.stdout.dropFirst("run/".count).prefix(13))
        let status = try await h.awaitRun(id, ["Succeeded", "Failed"])
        let logs = (try? String(contentsOfFile: h.state + "/logs/mcp/triager.log", encoding: .utf8)) ?? ""
        #expect(status == "Succeeded", "\(logs)\n\(h.file("controller.log"))")

        // The agent called create_issue through orl, with the step's inputs.
        let store = try SQLiteStateStore(directory: h.state)
        let value = try store.readRuns { reader throws(StoreError) in try reader.value(of: RunID(id)!, key: "file")?.value }
        let output = try #require(try JSONSerialization.jsonObject(with: Data((value ?? "{}").utf8)) as? [String: Any], "\(value ?? "")")
        let issue = "\(output["issues/create_issue"] ?? "")"
        #expect(issue.contains("Broken build") && issue.contains("CI is red"), "\(output)")
        #expect(logs.contains("called issues/create_issue"), "\(logs)")
        // Its policy allows list_issues too, but the step lists create_issue only.
        #expect(logs.contains("offered for this step: issues__create_issue\n"), "\(logs)")
        #expect(h.file("controller.log").contains("mcp tool \"issues/create_issue\" for \(id)/file/1: ok"), "\(h.file("controller.log"))")

        // And the Tool's status says its live definitions match the pins.
        var shown = ""
        let matches = await waitUntil(seconds: 15) {
            shown = (try? h.orlctl(["get", "tool", "issues", "-n", "mcp", "-o", "json"]).stdout) ?? ""
            let object = (try? JSONSerialization.jsonObject(with: Data(shown.utf8))) as? [String: Any]
            let conditions = (object?["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
            return conditions.contains { $0["type"] as? String == "PinMatches" && $0["status"] as? String == "True" }
        }
        #expect(matches, "\(shown)")
        try h.stopController()
    }
}
