import Foundation
import OrlCore
import OrlJSON
import OrlServer
import Synchronization
import Testing

/// The official OpenAI and Anthropic Python SDKs (scripts/install-deps installs them)
/// as the agent: Responses, Messages and embeddings through the gateway on loopback,
/// answered by the simulated provider and forwarded to a real upstream server.
@Suite(.serialized) struct ModelAPIsTests {
    typealias Harness = GatewayServerTests.Harness

    static let agentScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/sdk_agent.py")
        .path

    /// Runs the SDK agent with the environment orl gives agents; its one JSON line. One
    /// interpreter serves every call (`sdk_agent.py serve`): importing the two SDKs was two
    /// seconds of CPU per call. Waited for on a thread of its own: a blocking read on the
    /// cooperative pool (two threads on a two-core machine) would starve the gateway the
    /// agent is calling.
    static func agent(_ arguments: [String], gateway url: String) async throws -> [String: Any] {
        let environment = [
            "OPENAI_BASE_URL": url + "/v1", "ANTHROPIC_BASE_URL": url, "OPENAI_API_KEY": GatewayServerTests.agentToken,
            "ANTHROPIC_API_KEY": GatewayServerTests.agentToken,
        ]
        let stdout = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
            Thread {
                continuation.resume(
                    with: Result {
                        do { return try agents.call([environment] + arguments) } catch {
                            let said = "\(error)"
                            throw Failure(
                                "sdk_agent.py \(arguments.joined(separator: " ")) failed"
                                    + (said.contains("No module named")
                                        ? " (run scripts/install-deps --test to install the openai and anthropic SDKs)" : "")
                                    + ":\n\(said)")
                        }
                    })
            }.start()
        }
        return try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any] ?? [:]
    }

    /// The venv scripts/install-deps --test installs the SDKs into (with the MCP SDK).
    static let agents = PythonWorkers(
        python: (ProcessInfo.processInfo.environment["ORL_MCP_VENV"] ?? NSHomeDirectory() + "/.cache/orl/mcp-venv") + "/bin/python",
        script: [agentScript, "serve"])

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func usages(_ items: [[String: Any]]) -> [[Int]] {
        items.compactMap { ($0["usage"] ?? $0["ok"]) as? [Int] }.sorted { $0.lexicographicallyPrecedes($1) }
    }

    static func usages(_ rows: [LedgerEntry]) -> [[Int]] {
        rows.map { [$0.usage.prompt, $0.usage.completion] }.sorted { $0.lexicographicallyPrecedes($1) }
    }

    @Test(arguments: [("up/m", "ant/m"), ("sim/m", "sim/m")])
    func theSDKsCallEveryAPIAndTheLedgerHasTheirUsageExactly(openaiModel: String, anthropicModel: String) async throws {
        let h = try Harness()
        try await h.start()
        defer { Task { await h.stop() } }

        let seen = try await Self.agent(["calls", openaiModel, anthropicModel], gateway: h.url)
        let calls = try #require(seen["calls"] as? [[String: Any]])
        let metered = calls.filter { $0["usage"] != nil }
        #expect(metered.count == 6)
        for call in metered where call["text"] != nil {
            let text = call["text"] as? String ?? ""
            #expect(openaiModel == "up/m" ? text == "Hello from upstream" : text.hasPrefix("This is a simulated reply from m."), "\(call)")
        }
        let refused = calls.filter { $0["refused"] != nil }
        #expect(refused.map { $0["status"] as? Int } == [403, 400])
        #expect((refused.first?["message"] as? String)?.contains("may not use the model") == true)
        #expect((refused.last?["message"] as? String)?.contains("previous_response_id") == true)
        #expect(seen["openai_models"] as? [String] == ["sim/m", "up/m"])
        #expect(seen["anthropic_models"] as? [String] == ["ant/m", "sim/m"])

        let rows = try await h.ledger(count: 6)
        #expect(rows.count == 6)
        #expect(Self.usages(rows) == Self.usages(metered), "the ledger has what the SDKs were told, exactly")
        #expect(rows.allSatisfy { $0.outcome == "ok" && $0.agent == h.agent })
        for row in rows {
            let price = 1000.0 / 1_000_000
            #expect(abs(row.usd - Double(row.usage.total) * price) < 1e-12)
        }

        if openaiModel == "up/m" {
            #expect(metered.allSatisfy { ($0["usage"] as? [Int])?.first == FakeUpstream.usage.prompt })
            let received = h.upstream.received.withLock { $0 }
            #expect(
                received.map(\.path).sorted() == [
                    "/v1/embeddings", "/v1/embeddings", "/v1/messages", "/v1/messages", "/v1/responses", "/v1/responses",
                ])
            for request in received {
                let body = request.body
                #expect(body["model"] as? String == "m", "the provider gets its own model name")
                #expect(!String(decoding: request.raw, as: UTF8.self).contains(GatewayServerTests.agentToken))
                switch request.path {
                case "/v1/messages":
                    #expect(request.apiKey == GatewayServerTests.providerKey && request.authorization == nil)
                    #expect(request.anthropicVersion?.isEmpty == false, "the SDK's anthropic-version is passed on")
                    #expect(body["max_tokens"] as? Int == 10, "the model's bound, below the agent's 50")
                case "/v1/responses":
                    #expect(request.authorization == "Bearer \(GatewayServerTests.providerKey)" && request.apiKey == nil)
                    #expect(body["max_output_tokens"] as? Int == 10, "the reserved bound is sent even when the agent sent none")
                default:
                    #expect(request.authorization == "Bearer \(GatewayServerTests.providerKey)")
                    #expect(body["max_tokens"] == nil && body["max_output_tokens"] == nil)
                }
            }
        } else {
            #expect(h.upstream.received.withLock { $0.isEmpty })
        }
    }

    @Test(arguments: ["responses", "messages", "embeddings"])
    func sixtyFourConcurrentSDKClientsNeverSpendPastTheCap(api: String) async throws {
        let h = try Harness()
        let cap = 1.0
        try await h.start(dailyUSD: cap)
        defer { Task { await h.stop() } }

        let model = api == "messages" ? "ant/m" : "up/m"
        let result = try await Self.agent(["flood", api, model, "64", "2"], gateway: h.url)
        let outcomes = try #require(result["outcomes"] as? [[String: Any]])
        #expect(outcomes.count == 128)
        let succeeded = outcomes.filter { $0["ok"] != nil }
        #expect(
            outcomes.allSatisfy { $0["ok"] != nil || $0["refused"] as? Int == 429 }, "\(outcomes.filter { $0["error"] != nil }.prefix(3))")
        #expect(succeeded.count > 0 && succeeded.count < 128, "some calls fit, and 128 do not")
        let rows = try await h.ledger(count: succeeded.count)
        #expect(rows.count == succeeded.count)
        #expect(Self.usages(rows) == Self.usages(succeeded))
        let spent = rows.reduce(0) { $0 + $1.usd }
        #expect(spent <= cap, "settled spend \(spent) stays within the cap \(cap)")
        let daily = h.gateway.budgetStatus(now: GatewayServerTests.lateEvening).first { $0.account.budget.name == "daily" }
        #expect(daily.map { $0.reserved.tokens == 0 && abs($0.reserved.usd) < 1e-9 } == true, "no reservation is left behind")
        #expect(h.exhausted.withLock { $0 } >= 1)
    }
}
