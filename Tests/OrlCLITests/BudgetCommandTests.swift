import Foundation
import Testing

/// An agent that spends through the gateway until its budget halts it, end to end:
/// the real controller, a Python agent using the OpenAI HTTP API, `budget status`,
/// `usage` and events.
@Suite(.serialized) struct BudgetCommandTests {
    typealias Harness = ControllerCommandTests.Harness

    /// Calls the gateway as a stock OpenAI client would, from what orl put in its
    /// environment, until it is refused, then keeps trying slowly.
    static let agent = """
        import json, os, time, urllib.request, urllib.error
        url = os.environ["OPENAI_BASE_URL"] + "/chat/completions"
        body = json.dumps({"model": "sim/small", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}).encode()
        while True:
            request = urllib.request.Request(url, data=body, headers={
                "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request).read()
                print("ok", flush=True)
            except urllib.error.HTTPError as e:
                print(e.code, e.read().decode(), flush=True)
                time.sleep(0.2)
        """

    static func fleet(dailyUSD: Double, script: String) -> String {
        """
        apiVersion: orl.dev/v1
        kind: ModelProvider
        metadata: {name: sim}
        spec:
          apiStyle: simulated
          models: [{name: small, maxOutputTokens: 100, pricing: {input: 1000, output: 1000}}]
        ---
        apiVersion: orl.dev/v1
        kind: Budget
        metadata: {name: team}
        spec:
          appliesTo: {selector: {matchLabels: {fleet: test}}}
          limits: [{window: day, usd: \(dailyUSD)}]
          alertThresholds: [50]
        ---
        apiVersion: orl.dev/v1
        kind: Agent
        metadata: {name: spender, labels: {fleet: test}}
        spec:
          model: sim/small
          runtime: {command: python3, args: ["\(script)"], gracePeriod: 2s}
        ---
        apiVersion: orl.dev/v1
        kind: Policy
        metadata: {name: spender}
        spec:
          appliesTo: {agents: [spender]}
          allow: {models: ["sim/*"]}
        """
    }

    func json(_ h: Harness, _ arguments: [String]) -> [String: Any]? {
        guard let r = try? h.orlctl(arguments + ["-o", "json"]), r.status == 0 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]
    }

    func ready(_ h: Harness) -> [String: Any]? {
        let conditions = (json(h, ["get", "agent/spender"])?["status"] as? [String: Any])?["conditions"] as? [[String: Any]]
        return conditions?.first { $0["type"] as? String == "Ready" }
    }

    @Test func anAgentThatSpendsItsBudgetIsHaltedAndResumedWhenTheLimitIsRaised() async throws {
        let h = try Harness()
        try h.work.write("agent.py", Self.agent)
        let script = h.work.url.appendingPathComponent("agent.py").path
        let cap = 0.5
        try h.work.write("fleet/fleet.yaml", Self.fleet(dailyUSD: cap, script: script))
        #expect(try h.orlctl(["apply", "-f", "fleet"]).status == 0)
        try h.startController()

        #expect(await waitUntil(seconds: 30) { ready(h)?["reason"] as? String == "BudgetExceeded" }, "\(h.log())")
        #expect((ready(h)?["message"] as? String)?.contains("budget default/team is exhausted for this day") == true)
        #expect(await waitUntil { h.agents()["spender"] == nil }, "a halted agent's process is stopped")

        let usage = try #require(json(h, ["usage"]))
        let calls = try #require(usage["calls"] as? Int)
        let spent = try #require(usage["usd"] as? Double)
        #expect(calls > 1 && spent > 0 && spent <= cap, "\(usage)")

        let status = try #require((json(h, ["budget", "status"])?["budgets"] as? [[String: Any]])?.first)
        #expect(status["exhausted"] as? Bool == true && status["budget"] as? String == "team")
        #expect(((status["spent"] as? [String: Any])?["usd"] as? Double).map { abs($0 - spent) < 1e-9 } == true)
        let text = try h.orlctl(["budget", "status"])
        #expect(text.stdout.contains("Exhausted (halted)"), "\(text.stdout)")

        let events = try h.orlctl(["events", "--for", "budget/team"])
        #expect(events.stdout.contains("BudgetThreshold") && events.stdout.contains("BudgetExhausted"), "\(events.stdout)")
        // The refused call is named (whether the agent printed its 429 before it was
        // halted is a race; the body itself is checked by the gateway's own tests).
        #expect(events.stdout.contains("(call by Agent/spender)"), "\(events.stdout)")

        // An apply that raises the limit lifts the halt at once.
        try h.work.write("fleet/fleet.yaml", Self.fleet(dailyUSD: 100, script: script))
        #expect(try h.orlctl(["apply", "-f", "fleet"]).status == 0)
        #expect(await waitUntil(seconds: 15) { h.agents()["spender"]?.count == 1 }, "\(h.log())")
        #expect(await waitUntil(seconds: 15) { (json(h, ["usage"])?["calls"] as? Int ?? 0) > calls }, "it spends again")
        try await h.stopController()
    }
}
