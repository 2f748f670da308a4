import Foundation
import OrlCore
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// Metrics and traces of the real controller: the content pipeline run by the reference
/// agent, `/metrics` scraped (with the operator token on the API address, without it on
/// `--metrics-listen`) and compared with the ledger, and the spans an OTLP/HTTP receiver
/// (`Fixtures/otlp_receiver.py`, decoding with the official opentelemetry-proto) got.
@Suite(.serialized) struct ObservabilityTests {
    static var python: String {
        (ProcessInfo.processInfo.environment["ORL_MCP_VENV"] ?? NSHomeDirectory() + "/.cache/orl/mcp-venv") + "/bin/python"
    }

    /// GETs `url`; returns the status and the body.
    static func get(_ url: String, token: String? = nil) -> (Int, String) {
        guard let parsed = URL(string: url), !url.isEmpty else { return (0, "") }
        var request = URLRequest(url: parsed)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: (Int, String) = (0, "")
        URLSession.shared.dataTask(with: request) { data, response, _ in
            result = ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self))
            done.signal()
        }.resume()
        done.wait()
        return result
    }

    /// One sample of the text format: `name{labels} value`.
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    static func parse(_ text: String) -> [Sample] {
        text.split(separator: "\n").compactMap { line -> Sample? in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                return nil
            }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else { return Sample(name: String(series), labels: [:], value: value) }
            var labels: [String: String] = [:]
            var rest = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            while let equals = rest.firstIndex(of: "=") {
                let name = String(rest[..<equals])
                var index = rest.index(equals, offsetBy: 2)
                var value = ""
                while rest[index] != "\"" {
                    if rest[index] == "\\" { index = rest.index(after: index) }
                    value.append(rest[index])
                    index = rest.index(after: index)
                }
                labels[name] = value
                rest = rest[rest.index(after: index)...]
                if rest.first == "," { rest = rest.dropFirst() }
            }
            return Sample(name: String(series[..<brace]), labels: labels, value: value)
        }
    }

    static func sum(_ samples: [Sample], _ name: String, _ where: [String: String] = [:]) -> Double {
        samples.filter { s in s.name == name && `where`.allSatisfy { s.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }

    @Test func theContentPipelineIsMeteredAsTheLedgerSaysAndTracedAsOneTrace() async throws {
        let h = try AgentRunsTests.Harness()
        let spansFile = h.work.url.appendingPathComponent("spans.jsonl").path
        let portFile = h.work.url.appendingPathComponent("otlp.port").path
        try h.background(
            Self.python, [AgentRunsTests.fixtures + "/otlp_receiver.py", portFile, spansFile], log: "otlp.log")
        #expect(await waitUntil(seconds: 30) { FileManager.default.fileExists(atPath: portFile) }, "\(h.file("otlp.log"))")
        let otlpPort = try String(contentsOfFile: portFile, encoding: .utf8)

        try FileManager.default.createDirectory(atPath: h.state + "/workspace", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: h.state + "/workspace/examples", withDestinationPath: Orlctl.packageRoot.appendingPathComponent("examples").path)
        try h.apply(Orlctl.packageRoot.appendingPathComponent("manifests").path)
        try h.background(
            Orlctl.binary.path, ["controller", "--state", h.state, "--metrics-listen", "127.0.0.1:0"], log: "controller.log",
            environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(otlpPort)", "OTEL_BSP_SCHEDULE_DELAY": "100"])

        let id = try h.start("content-pipeline", ["--input", "topic=otters"])
        try await h.awaitRun(id, ["WaitingApproval"])

        // The approval waiting shows; on the API address only with the operator token.
        var metricsURL = ""
        #expect(
            await waitUntil(seconds: 10) {
                metricsURL =
                    h.file("controller.log").split(separator: "\n").first { $0.contains("listening on") && $0.hasSuffix("/metrics") }
                    .flatMap { $0.split(separator: " ").last.map(String.init) } ?? ""
                return !metricsURL.isEmpty
            }, "\(h.file("controller.log"))")
        let apiURL = try String(contentsOfFile: h.state + "/controller.api", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        let token = try String(contentsOfFile: h.state + "/controller.token", encoding: .utf8)
        #expect(Self.get(apiURL + "/metrics").0 == 401)
        #expect(Self.get(apiURL + "/metrics", token: "wrong").0 == 401)
        let waiting = Self.get(apiURL + "/metrics", token: token)
        #expect(waiting.0 == 200)
        #expect(Self.sum(Self.parse(waiting.1), "orl_approvals_pending") == 1, "\(waiting.1)")
        #expect(waiting.1.contains("# TYPE gen_ai_client_token_usage histogram"))

        #expect(try h.orlctl(["approve", "run/\(id)", "--step", "editorial-review", "--reason", "ship it"]).status == 0)
        #expect(try await h.awaitRun(id, ["Succeeded", "Failed"]) == "Succeeded")

        // Token and cost totals are the ledger's, per agent and model (the ledger is
        // written in batches: waited for until they agree).
        var samples: [Sample] = []
        var ledger: [[String: Any]] = []
        let agreed = await waitUntil(seconds: 15) {
            let scraped = Self.get(metricsURL)
            guard scraped.0 == 200 else { return false }
            samples = Self.parse(scraped.1)
            let usage = (try? h.orlctl(["usage", "-o", "json"]).stdout) ?? ""
            ledger =
                ((try? JSONSerialization.jsonObject(with: Data(usage.utf8))) as? [String: Any])?["byAgentAndModel"] as? [[String: Any]]
                ?? []
            return !ledger.isEmpty
                && ledger.allSatisfy { row in
                    let labels = ["agent": row["agent"] as? String ?? "", "model": row["model"] as? String ?? ""]
                    return Self.sum(samples, "orl_tokens_total", labels.merging(["type": "input"]) { $1 })
                        == Double(row["promptTokens"] as? Int ?? -1)
                        && Self.sum(samples, "orl_tokens_total", labels.merging(["type": "output"]) { $1 })
                            == Double(row["completionTokens"] as? Int ?? -1)
                        && abs(Self.sum(samples, "orl_cost_usd_total", labels) - (row["usd"] as? Double ?? -1)) < 1e-9
                        && Self.sum(samples, "orl_model_calls_total", labels) == Double(row["calls"] as? Int ?? -1)
                }
        }
        #expect(
            agreed, "ledger \(ledger)\nmetrics\n\(samples.filter { $0.name.hasPrefix("orl_") }.map { "\($0)" }.joined(separator: "\n"))")
        #expect(Set(ledger.compactMap { $0["agent"] as? String }).isSuperset(of: ["researcher", "writer", "publisher"]))
        // The GenAI histogram counts the same tokens, and every call has a duration.
        let prompt = ledger.reduce(0) { $0 + ($1["promptTokens"] as? Int ?? 0) }
        let calls = ledger.reduce(0) { $0 + ($1["calls"] as? Int ?? 0) }
        #expect(Self.sum(samples, "gen_ai_client_token_usage_sum", ["gen_ai_token_type": "input"]) == Double(prompt))
        #expect(Self.sum(samples, "gen_ai_client_operation_duration_seconds_count") == Double(calls))
        #expect(Self.sum(samples, "gen_ai_client_operation_duration_seconds_count", ["gen_ai_operation_name": "chat"]) == Double(calls))
        // Tools, steps, phases, budgets and the reconcile loop.
        #expect(Self.sum(samples, "orl_tool_calls_total", ["tool": "write-draft", "agent": "writer", "outcome": "ok"]) >= 1)
        #expect(Self.sum(samples, "orl_tool_calls_total", ["tool": "read-draft", "outcome": "ok"]) >= 1)
        #expect(Self.sum(samples, "orl_run_steps", ["state": "Succeeded"]) == 5)
        #expect(Self.sum(samples, "orl_approvals_pending") == 0)
        #expect(Self.sum(samples, "orl_run_step_attempt_duration_seconds_count", ["outcome": "Succeeded"]) >= 4)
        #expect(Self.sum(samples, "orl_agent_phase", ["agent": "writer", "phase": "Running"]) == 1)
        #expect(Self.sum(samples, "orl_agent_phase", ["agent": "writer"]) == 1, "one phase at a time")
        #expect(samples.contains { $0.name == "orl_budget_limit_usd" && $0.value > 0 }, "the manifests' budgets")
        let spentUSD = Self.sum(samples, "orl_budget_spent_usd")
        #expect(spentUSD > 0)
        #expect(Self.sum(samples, "orl_reconcile_duration_seconds_count") >= 1)
        #expect(Self.sum(samples, "orl_state_readable") == 1)

        // The traces: one per run, the workflow at its root, each step attempt under it,
        // each model and tool call under the attempt it served (the reference agent sends
        // the task's traceparent back, and the controller continues it).
        var spans: [[String: Any]] = []
        let workflowTrace = SpanContext.workflow(run: id)
        let traced = await waitUntil(seconds: 20) {
            spans = h.file("spans.jsonl").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            return spans.contains { $0["name"] as? String == "invoke_workflow content-pipeline" }
        }
        #expect(traced, "\(spans)\n\(h.file("controller.log"))")
        #expect(!spans.contains { $0["error"] != nil }, "every export decoded: \(spans.filter { $0["error"] != nil })")
        let inRun = spans.filter { $0["trace"] as? String == SpanContext.hex(workflowTrace.traceID) }
        func attributes(_ span: [String: Any]) -> [String: Any] { span["attributes"] as? [String: Any] ?? [:] }
        let workflow = try #require(inRun.first { $0["name"] as? String == "invoke_workflow content-pipeline" })
        #expect(workflow["parent"] as? String == "")
        #expect(attributes(workflow)["gen_ai.conversation.id"] as? String == id)
        #expect(attributes(workflow)["gen_ai.operation.name"] as? String == "invoke_workflow")
        #expect(workflow["service"] as? String == "orl")
        let workflowID = try #require(workflow["span"] as? String)
        let attempts = inRun.filter { attributes($0)["gen_ai.operation.name"] as? String == "invoke_agent" }
        #expect(Set(attempts.compactMap { attributes($0)["orl.step"] as? String }) == ["research", "draft", "publish", "announce"])
        #expect(attempts.allSatisfy { $0["parent"] as? String == workflowID })
        let attemptIDs = Set(attempts.compactMap { $0["span"] as? String })
        let chats = inRun.filter { attributes($0)["gen_ai.operation.name"] as? String == "chat" }
        #expect(chats.count == calls, "one chat span per ledger row")
        #expect(chats.allSatisfy { attemptIDs.contains($0["parent"] as? String ?? "") && $0["kind"] as? Int == 3 })
        #expect(chats.reduce(0) { $0 + (attributes($1)["gen_ai.usage.input_tokens"] as? Int ?? 0) } == prompt)
        #expect(chats.allSatisfy { attributes($0)["gen_ai.conversation.id"] as? String == id })
        let tools = inRun.filter { attributes($0)["gen_ai.operation.name"] as? String == "execute_tool" }
        #expect(Set(tools.compactMap { attributes($0)["gen_ai.tool.name"] as? String }).isSuperset(of: ["write-draft", "read-draft"]))
        #expect(tools.allSatisfy { attemptIDs.contains($0["parent"] as? String ?? "") })
        #expect(
            inRun.allSatisfy { ($0["start"] as? Int ?? 0) > 0 && ($0["end"] as? Int ?? 0) >= ($0["start"] as? Int ?? 0) },
            "every span has its times")

        try h.stopController()
    }

    /// A wrong OTEL_EXPORTER_OTLP_ENDPOINT stops the controller at start, and a bad
    /// --metrics-listen is refused before anything starts.
    @Test func badTelemetrySettingsAreRefusedAtStart() throws {
        let h = try AgentRunsTests.Harness()
        let endpoint = try h.orlctl(["controller"], environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"])
        #expect(endpoint.status == 2)
        #expect(endpoint.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL"), "\(endpoint.stderr)")
        let listen = try h.orlctl(["controller", "--metrics-listen", "nowhere"])
        #expect(listen.status == 2)
        #expect(listen.stderr.contains("--metrics-listen must be HOST:PORT"), "\(listen.stderr)")
    }
}
