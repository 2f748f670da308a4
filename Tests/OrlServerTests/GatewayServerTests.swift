import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OrlCore
import OrlJSON
import OrlStore
import OrlTestSupport
import OrlYAML
import Synchronization
import Testing

@testable import OrlServer

/// A value shared with the closures given to the gateway.
final class Locked<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { value.withLock { body(&$0) } }
}

/// The gateway over real HTTP on loopback, in front of a real upstream server, with a
/// real SQLite ledger and an injected clock.
@Suite(.serialized) struct GatewayServerTests {
    static let agentToken = "token-of-agent-a"
    static let providerKey = "sk-provider-secret-123"
    /// 2026-11-21T23:00:00Z: an hour before the day's window ends.
    static let lateEvening = Timestamp(milliseconds: 1_795_302_000_000)

    static func fleetYAML(upstream: String, dailyUSD: Double = 100, timeout: String = "60s") -> String {
        """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: up}
        spec:
          apiStyle: openai
          baseURL: \(upstream)
          apiKeySecret: up-key
          timeout: \(timeout)
          models:
            - {name: m, maxOutputTokens: 10, pricing: {input: 1000, output: 1000}}
            - {name: forbidden, pricing: {input: 1, output: 1}}
        ---
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: ant}
        spec:
          apiStyle: anthropic
          baseURL: \(upstream)
          apiKeySecret: up-key
          timeout: \(timeout)
          models:
            - {name: m, maxOutputTokens: 10, pricing: {input: 1000, output: 1000}}
        ---
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models:
            - {name: m, maxOutputTokens: 10, pricing: {input: 1000, output: 1000}}
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: a, labels: {team: x}}
        spec:
          model: up/m
          runtime: {command: sleep}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: x}
        spec:
          appliesTo: {selector: {matchLabels: {team: x}}}
          allow: {models: ["up/*", "sim/*", "ant/*"]}
          deny: {models: [up/forbidden]}
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: daily}
        spec:
          appliesTo: {selector: {matchLabels: {team: x}}}
          limits: [{window: day, usd: \(dailyUSD)}]
        """
    }

    final class Harness: Sendable {
        let upstream = FakeUpstream()
        let store: SQLiteStateStore
        let gateway: Gateway
        let now = Locked(GatewayServerTests.lateEvening)
        let exhausted = Locked(0)
        nonisolated(unsafe) var url = ""
        nonisolated(unsafe) var server: Task<Void, any Error>?
        let directory: String
        let agent = ResourceID(kind: "Agent", namespace: "default", name: "a")

        init(telemetry: Telemetry = .off) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("orl-gateway-\(UUID().uuidString)").path
            store = try SQLiteStateStore(directory: directory)
            let now = self.now
            let exhausted = self.exhausted
            gateway = Gateway(
                store: store, providerKey: { $0 == SecretID(name: "up-key") ? GatewayServerTests.providerKey : nil },
                clock: { now.withLock { $0 } },
                log: { _ in }, onExhausted: { exhausted.withLock { $0 += 1 } }, telemetry: telemetry)
        }

        func start(dailyUSD: Double = 100) async throws {
            try await upstream.start()
            configure(dailyUSD: dailyUSD)
            let started = try await APIServer(gateway: gateway, port: 0).start()
            url = started.url
            server = started.task
        }

        func configure(dailyUSD: Double, timeout: String = "60s") {
            let document = YAMLParser().parse(
                GatewayServerTests.fleetYAML(upstream: upstream.url, dailyUSD: dailyUSD, timeout: timeout), file: "fleet.yaml")
            let report = ManifestValidation.validate([document], strict: false)
            gateway.update(fleet: report.fleet, tokens: [agent: AgentToken.digest(GatewayServerTests.agentToken)], now: now.withLock { $0 })
        }

        func stop() async {
            server?.cancel()
            _ = await server?.result
            await upstream.stop()
            try? FileManager.default.removeItem(atPath: directory)
        }

        func ledger() throws -> [LedgerEntry] {
            try store.read { reader throws(StoreError) in try reader.ledger(LedgerQuery()) }
        }

        /// The ledger once `expected` rows have been written (they are written in batches).
        func ledger(count expected: Int) async throws -> [LedgerEntry] {
            for _ in 0..<200 {
                let rows = try ledger()
                if rows.count >= expected { return rows }
                try await Task.sleep(for: .milliseconds(25))
            }
            return try ledger()
        }

        func post(
            _ body: String, path: String = "/v1/chat/completions", token: String? = GatewayServerTests.agentToken,
            headers: [(String, String)] = []
        ) async throws -> (status: Int, body: String, headers: [(String, String)]) {
            var request = HTTPClientRequest(url: url + path)
            request.method = .POST
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            request.body = .bytes(ByteBuffer(string: body))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            let bytes = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), String(buffer: bytes), response.headers.map { ($0.name, $0.value) })
        }

        func get(_ path: String, token: String = GatewayServerTests.agentToken) async throws -> (status: Int, body: String) {
            var request = HTTPClientRequest(url: url + path)
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
        }
    }

    static func chat(model: String = "up/m", stream: Bool = false, maxTokens: Int = 10) -> String {
        #"{"model":"\#(model)","messages":[{"role":"user","content":"Say hello"}],"max_tokens":\#(maxTokens),"stream":\#(stream)}"#
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// Dollars of a call of the fake upstream's usage at the test model's price.
    static let callUSD = Double(FakeUpstream.usage.prompt + FakeUpstream.usage.completion) * 1000 / 1_000_000

    @Test func theProviderKeyIsInjectedAndUsageAccountedExactly() async throws {
        let h = try Harness()
        try await h.start()
        defer { Task { await h.stop() } }

        let plain = try await h.post(Self.chat())
        #expect(plain.status == 200)
        #expect((Self.json(plain.body)["usage"] as? [String: Any])?["completion_tokens"] as? Int == FakeUpstream.usage.completion)
        #expect(plain.headers.contains { $0.0.lowercased() == "x-request-id" })

        let streamed = try await h.post(Self.chat(stream: true))
        #expect(streamed.status == 200)
        #expect(streamed.body.contains(#""content":" upstream""#) && streamed.body.hasSuffix("data: [DONE]\n\n"))

        let seen = h.upstream.received.withLock { $0 }
        #expect(seen.count == 2)
        #expect(seen.allSatisfy { $0.authorization == "Bearer \(Self.providerKey)" }, "the provider key replaces the agent's token")
        #expect(seen.allSatisfy { !String(decoding: $0.raw, as: UTF8.self).contains(Self.agentToken) })
        #expect(seen.allSatisfy { $0.body["model"] as? String == "m" }, "the provider gets its own model name")
        #expect((seen[1].body["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)

        let rows = try await h.ledger(count: 2)
        #expect(rows.count == 2)
        for row in rows {
            #expect(row.usage == TokenUsage(prompt: FakeUpstream.usage.prompt, completion: FakeUpstream.usage.completion))
            #expect(abs(row.usd - Self.callUSD) < 1e-12 && row.model == "up/m" && row.agent == h.agent && row.outcome == "ok")
        }
        #expect(Set(rows.map(\.requestID)).count == 2)
    }

    @Test func callsThePolicyDoesNotAllowNeverReachTheProvider() async throws {
        let h = try Harness()
        try await h.start()
        defer { Task { await h.stop() } }

        let denied = try await h.post(Self.chat(model: "up/forbidden"))
        #expect(denied.status == 403)
        let error = Self.json(denied.body)["error"] as? [String: Any]
        #expect(error?["code"] as? String == "model_not_allowed")
        #expect(try await h.post(Self.chat(model: "elsewhere/m")).status == 403)
        #expect(try await h.post(Self.chat(), token: "forged").status == 401)
        #expect(try await h.post(Self.chat(), token: nil).status == 401)
        #expect(try await h.post("{not json").status == 400)
        #expect(h.upstream.received.withLock { $0.count } == 0)

        let models = try await h.get("/v1/models")
        let ids = (Self.json(models.body)["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(ids == ["sim/m", "up/m"])
        #expect(try await h.get("/v1/models", token: "forged").status == 401)
    }

    @Test func upstreamFailuresAreClearAndCostNothing() async throws {
        let h = try Harness()
        try await h.start()
        defer { Task { await h.stop() } }

        h.upstream.behaviour.withLock { $0 = .fail(status: 503) }
        let failed = try await h.post(Self.chat())
        #expect(failed.status == 502)
        #expect((Self.json(failed.body)["error"] as? [String: Any])?["code"] as? String == "upstream_error")
        #expect(failed.body.contains("answered 503"))

        h.upstream.behaviour.withLock { $0 = .fail(status: 400) }
        #expect(try await h.post(Self.chat()).status == 400, "a provider's 4xx is passed on")

        // A provider that does not answer within its timeout.
        h.configure(dailyUSD: 100, timeout: "2s")
        h.upstream.behaviour.withLock { $0 = .stall(seconds: 30) }
        let slow = try await h.post(Self.chat())
        #expect(slow.status == 504)
        #expect((Self.json(slow.body)["error"] as? [String: Any])?["code"] as? String == "upstream_timeout")

        await h.upstream.stop()
        let gone = try await h.post(Self.chat())
        #expect(gone.status == 502)
        #expect((Self.json(gone.body)["error"] as? [String: Any])?["code"] as? String == "upstream_unreachable")

        let rows = try await h.ledger(count: 4)
        #expect(rows.count == 4 && rows.allSatisfy { $0.usd == 0 && $0.usage.total == 0 })
        let daily = h.gateway.budgetStatus(now: Self.lateEvening).first { $0.account.budget.name == "daily" }
        #expect(daily?.reserved == .zero && daily?.spent == .zero, "no reservation leaks")
    }

    /// A provider that closes a kept-alive connection just as the gateway sends the next
    /// call on it (a server closing an idle connection races the client's reuse): the
    /// call is sent again on a new connection, and none is lost or charged twice.
    @Test(.timeLimit(.minutes(1))) func connectionsTheProviderClosesWhileIdleLoseNoCall() async throws {
        let h = try Harness()
        try await h.upstream.start(closeReused: true)
        h.configure(dailyUSD: 100)
        let started = try await APIServer(gateway: h.gateway, port: 0).start()
        h.url = started.url
        h.server = started.task
        defer { Task { await h.stop() } }

        for round in 0..<4 {
            let answered = try await h.post(Self.chat())
            #expect(answered.status == 200, "round \(round): \(answered.body)")
            // Every call after the first went out on the kept connection, which the
            // provider closed unanswered: the call was sent again on a new one.
            await h.upstream.waitForCloses(round)
        }
        #expect(h.upstream.closes.count == 3, "each reuse met a close")
        #expect(h.upstream.received.withLock { $0.count } == 4, "each call reached the provider once")
        let rows = try await h.ledger(count: 4)
        #expect(rows.count == 4 && rows.allSatisfy { $0.usage.prompt == FakeUpstream.usage.prompt && $0.outcome == "ok" })
    }

    @Test func theProvidersPlainHTTPAddressIsReadWhole() {
        let endpoint = UpstreamClient.Endpoint("http://127.0.0.1:8080/v1/chat/completions")
        #expect(endpoint?.target == UpstreamClient.Target(host: "127.0.0.1", port: 8080))
        #expect(endpoint?.path == "/v1/chat/completions" && endpoint?.authority == "127.0.0.1:8080")
        #expect(UpstreamClient.Endpoint("http://[::1]:9000/v1")?.target == UpstreamClient.Target(host: "::1", port: 9000))
        #expect(UpstreamClient.Endpoint("http://models.internal/v1")?.target.port == 80)
        for served in ["https://api.openai.com/v1", "http://user:pw@host/v1", "http://host:99999/v1", "http://:80/v1", "http://host:x/v1"] {
            #expect(UpstreamClient.Endpoint(served) == nil, "\(served) goes to the general client or is refused")
        }
        // Parsed once per URL: the same endpoint (or none) each time.
        let urls = ["http://127.0.0.1:8080/v1/chat/completions", "http://[::1]:9000/v1", "https://api.openai.com/v1", "http://host:x/v1"]
        for _ in 0..<2 {
            for url in urls { #expect(UpstreamClient.endpoint(url) == UpstreamClient.Endpoint(url), "\(url)") }
        }
    }

    @Test func concurrentCallsNeverSpendPastTheCap() async throws {
        let h = try Harness()
        let cap = 1.0
        try await h.start(dailyUSD: cap)
        defer { Task { await h.stop() } }

        let outcomes = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<64 {
                group.addTask {
                    var statuses: [Int] = []
                    for _ in 0..<4 { statuses.append(try await h.post(Self.chat()).status) }
                    return statuses
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let succeeded = outcomes.filter { $0 == 200 }.count
        #expect(outcomes.allSatisfy { $0 == 200 || $0 == 429 })
        #expect(succeeded > 0 && succeeded < 256, "some calls fit, and 256 × $\(Self.callUSD) does not")
        let rows = try await h.ledger(count: succeeded)
        let spent = rows.reduce(0) { $0 + $1.usd }
        #expect(rows.count == succeeded)
        #expect(spent <= cap, "settled spend \(spent) stays within the cap \(cap)")
        #expect(h.exhausted.withLock { $0 } >= 1)
        let refusal = try await h.post(Self.chat())
        #expect(refusal.status == 429)
        let error = Self.json(refusal.body)["error"] as? [String: Any]
        #expect(error?["code"] as? String == "budget_exceeded")
        #expect((error?["message"] as? String)?.contains("budget default/daily is exhausted") == true)
        #expect((error?["message"] as? String)?.contains("resets at 2026-11-22T00:00:00.000Z") == true)
    }

    @Test func aHaltEndsWhenTheWindowRollsOver() async throws {
        let h = try Harness()
        try await h.start(dailyUSD: 0.15)
        defer { Task { await h.stop() } }

        var statuses: [Int] = []
        while statuses.last != 429 && statuses.count < 20 { statuses.append(try await h.post(Self.chat(model: "sim/m")).status) }
        #expect(statuses.count > 1 && statuses.dropLast().allSatisfy { $0 == 200 } && statuses.last == 429)
        #expect(h.gateway.halts(now: Self.lateEvening)[h.agent]?.resumesAt.description == "2026-11-22T00:00:00.000Z")
        // Just before midnight it still holds; just after, the new day starts empty.
        let beforeMidnight = Timestamp(milliseconds: Self.lateEvening.milliseconds + 3_599_999)
        #expect(h.gateway.halts(now: beforeMidnight)[h.agent] != nil)
        let afterMidnight = Timestamp(milliseconds: Self.lateEvening.milliseconds + 3_600_000)
        #expect(h.gateway.halts(now: afterMidnight).isEmpty)
        h.now.withLock { $0 = afterMidnight }
        #expect(try await h.post(Self.chat(model: "sim/m")).status == 200)

        // A new gateway (a controller restart) counts the day's spend from the ledger.
        let rows = try await h.ledger(count: statuses.count)
        #expect(rows.count == statuses.count)
        let restarted = Gateway(store: h.store, providerKey: { _ in nil }, clock: { afterMidnight }, log: { _ in }, onExhausted: {})
        let report = ManifestValidation.validate(
            [YAMLParser().parse(Self.fleetYAML(upstream: h.upstream.url, dailyUSD: 0.15), file: "fleet.yaml")], strict: false)
        restarted.update(fleet: report.fleet, tokens: [:], now: afterMidnight)
        let daily = restarted.budgetStatus(now: afterMidnight).first { $0.account.budget.name == "daily" }
        #expect(daily.map { abs($0.spent.usd - rows[0].usd) < 1e-12 } == true, "only today's call counts today")
    }
}
