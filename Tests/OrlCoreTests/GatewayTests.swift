import Foundation
import OrlCore
import OrlJSON
import Testing

/// A fleet of two teams: `x` (agents a and b) shares a halting budget; agent c has a
/// perAgent one and an alert-only one.
private let fleetYAML = """
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: sim}
    spec:
      apiStyle: simulated
      models:
        - {name: small, maxOutputTokens: 100, pricing: {input: 1000, output: 2000}}
        - {name: big, pricing: {input: 1, output: 1}}
    ---
    apiVersion: orl.dev/v1
    kind: ModelProvider
    metadata: {name: other}
    spec:
      apiStyle: openai
      baseURL: http://127.0.0.1:9/v1
      models:
        - {name: small, pricing: {input: 1, output: 1}}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: a, labels: {team: x}}
    spec:
      model: sim/small
      maxTokensPerCall: 40
      runtime: {command: sleep}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: b, labels: {team: x}}
    spec:
      model: sim/small
      runtime: {command: sleep}
    ---
    apiVersion: orl.dev/v1
    kind: Agent
    metadata: {name: c, labels: {team: y}}
    spec:
      model: other/small
      runtime: {command: sleep}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: x}
    spec:
      appliesTo: {selector: {matchLabels: {team: x}}}
      allow: {models: ["sim/*"]}
      deny: {models: ["sim/big"]}
    ---
    apiVersion: orl.dev/v1
    kind: Policy
    metadata: {name: y}
    spec:
      appliesTo: {selector: {matchLabels: {team: y}}}
      allow: {models: ["*"]}
    ---
    apiVersion: orl.dev/v1
    kind: Budget
    metadata: {name: shared}
    spec:
      appliesTo: {selector: {matchLabels: {team: x}}}
      limits: [{window: day, usd: 1}, {window: month, tokens: 100000}]
      alertThresholds: [50, 80]
    ---
    apiVersion: orl.dev/v1
    kind: Budget
    metadata: {name: each}
    spec:
      appliesTo: {selector: {matchLabels: {team: y}}}
      scope: perAgent
      limits: [{window: day, tokens: 1000}]
    ---
    apiVersion: orl.dev/v1
    kind: Budget
    metadata: {name: watch}
    spec:
      appliesTo: {selector: {matchLabels: {team: y}}}
      limits: [{window: day, usd: 0.000001}]
      onExceeded: alert
    """

@Suite struct GatewayTests {
    let fleet: Fleet
    let a = ResourceID(kind: "Agent", namespace: "default", name: "a")
    let b = ResourceID(kind: "Agent", namespace: "default", name: "b")
    let c = ResourceID(kind: "Agent", namespace: "default", name: "c")
    /// 2026-11-21T18:00:00Z
    let evening = Timestamp(milliseconds: 1_795_284_000_000)

    init() throws {
        let report = validate(fleetYAML)
        #expect(report.diagnostics.filter { $0.severity == .error }.isEmpty, "\(report.diagnostics.map(\.message))")
        fleet = report.fleet
    }

    func request(_ json: String) throws -> ModelRequest { try ModelRequest(body: Array(json.utf8)) }

    // MARK: Windows

    @Test func windowsAreUTCCalendarDaysAndMonths() {
        #expect(evening.description == "2026-11-21T18:00:00.000Z")
        let day = BudgetSpec.Window.day.interval(containing: evening)
        #expect(day.lowerBound.description == "2026-11-21T00:00:00.000Z" && day.upperBound.description == "2026-11-22T00:00:00.000Z")
        let month = BudgetSpec.Window.month.interval(containing: evening)
        #expect(month.lowerBound.description == "2026-11-01T00:00:00.000Z" && month.upperBound.description == "2026-12-01T00:00:00.000Z")
        let newYearsEve = Timestamp(milliseconds: 1_798_761_599_999)
        #expect(newYearsEve.description == "2026-12-31T23:59:59.999Z")
        #expect(BudgetSpec.Window.month.interval(containing: newYearsEve).upperBound.description == "2027-01-01T00:00:00.000Z")
        #expect(Timestamp(milliseconds: -1).description == "1969-12-31T23:59:59.999Z")
        for days in [-800_000, -1, 0, 59, 11_016, 20_778, 2_932_896] {
            #expect(CivilDate(daysSinceEpoch: days).daysSinceEpoch == days)
        }
    }

    // MARK: Requests

    @Test func aRequestIsReadAndRewrittenForTheProvider() throws {
        let chat = try request(
            #"{"model":"sim/small","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"temperature":0.7,"stream":true,"max_completion_tokens":20}"#
        )
        #expect(chat.model == "sim/small" && chat.stream && chat.maxTokens == 20)
        #expect(chat.messages.map(\.content) == ["be brief", "hi"])
        let upstream = String(decoding: chat.upstreamBody(model: "gpt-4o-mini", maxTokens: 7), as: UTF8.self)
        #expect(upstream.contains(#""model":"gpt-4o-mini""#) && upstream.contains(#""max_completion_tokens":7"#))
        #expect(upstream.contains(#""stream_options":{"include_usage":true}"#) && upstream.contains(#""temperature":0.7"#))
        #expect(!upstream.contains("max_tokens"))
    }

    @Test(arguments: [
        ("not json", "invalid_request"), (#"[1]"#, "invalid_request"),
        (#"{"messages":[{"role":"user","content":"x"}]}"#, "invalid_request"),
        (#"{"model":"m","messages":[]}"#, "invalid_request"),
        (#"{"model":"m","messages":[{"content":"x"}],"max_tokens":0}"#, "invalid_request"),
    ])
    func badRequestsAreRefusedWithOpenAIErrors(body: String, code: String) {
        #expect(throws: GatewayError.self) { try request(body) }
        do throws(GatewayError) {
            _ = try ModelRequest(body: Array(body.utf8))
        } catch {
            #expect(error.code == code && error.status == 400)
            #expect(error.body.hasPrefix(#"{"error":{"message":"#))
        }
    }

    // MARK: Routing

    @Test func routesFollowPolicyAndFailClosed() throws {
        let table = CallerTable(fleet: fleet, tokens: [a: AgentToken.digest("token-a"), c: AgentToken.digest("token-c")])
        #expect(table.caller(token: "token-b") == nil)
        #expect(table.caller(token: AgentToken.digest("token-a")) == nil, "a digest is not a token")
        let callerA = try #require(table.caller(token: "token-a"))
        #expect(callerA.routes.map(\.id) == ["sim/small"], "sim/big is denied, other/* not allowed")
        #expect(try callerA.route("small").id == "sim/small")
        #expect(try callerA.route("sim/small").id == "sim/small")
        do throws(GatewayError) {
            _ = try callerA.route("sim/big")
            Issue.record("a denied model must be refused")
        } catch {
            #expect(error.code == "model_not_allowed" && error.status == 403 && error.message.contains("it may use: sim/small"))
        }
        let callerC = try #require(table.caller(token: "token-c"))
        #expect(try callerC.route("small").id == "other/small", "a bare name prefers the agent's own provider")
        #expect(callerC.routes.count == 3)
    }

    @Test func theCompletionBoundIsTheLeastOfWhatEveryoneSays() throws {
        let callerA = try #require(CallerTable(fleet: fleet, tokens: [a: AgentToken.digest("t")]).caller(token: "t"))
        let small = try callerA.route("small")
        #expect(callerA.completionBound(try request(#"{"model":"small","messages":[{"role":"user","content":"x"}]}"#), small) == 40)
        #expect(
            callerA.completionBound(try request(#"{"model":"small","messages":[{"role":"user","content":"x"}],"max_tokens":10}"#), small)
                == 10)
    }

    // MARK: The simulated provider

    @Test func theSimulatedProviderIsDeterministicAndWithinItsBounds() throws {
        let chat = try request(#"{"model":"small","messages":[{"role":"user","content":"tell me about otters and rivers"}]}"#)
        let one = SimulatedProvider.complete(chat, model: "small", maxTokens: 100)
        #expect(one == SimulatedProvider.complete(chat, model: "small", maxTokens: 100))
        #expect(one.content.hasSuffix("You asked: tell me about otters and rivers"))
        #expect(one.usage.prompt <= chat.promptBound && one.usage.completion == one.content.split(separator: " ").count)
        let short = SimulatedProvider.complete(chat, model: "small", maxTokens: 3)
        #expect(short.usage.completion == 3 && short.content == "This is a")
        let events = SimulatedProvider.events(one, model: "small", created: evening)
        var parser = ServerSentEvents()
        let payloads = parser.feed(Array(events.joined().utf8))
        #expect(payloads.last == Array("[DONE]".utf8))
        let usages = payloads.compactMap { TokenUsage(body: $0) }
        #expect(usages == [one.usage], "exactly one chunk carries the usage")
    }

    @Test func serverSentEventsSurviveAnySplit() {
        let stream = Array("data: {\"a\":1}\r\n\r\ndata:{\"b\":2}\n\n: comment\ndata: [DONE]\n\n".utf8)
        for cut in 0...stream.count {
            var parser = ServerSentEvents()
            let payloads = parser.feed(stream[..<cut]) + parser.feed(stream[cut...])
            #expect(payloads.map { String(decoding: $0, as: UTF8.self) } == [#"{"a":1}"#, #"{"b":2}"#, "[DONE]"])
        }
    }

    // MARK: The meter

    @Test func aSharedBudgetRefusesWhatWouldPassItsCap() {
        var meter = BudgetMeter()
        meter.configure(fleet)
        let call = Charge(usd: 0.3, tokens: 10)
        guard case .success(let r1) = meter.reserve(a, call, now: evening), case .success(let r2) = meter.reserve(b, call, now: evening),
            case .success(let r3) = meter.reserve(a, call, now: evening)
        else {
            Issue.record("three calls of $0.30 fit in $1")
            return
        }
        guard case .failure(let refusal) = meter.reserve(b, call, now: evening) else {
            Issue.record("a fourth reservation would pass the cap together with the open ones")
            return
        }
        #expect(refusal.isFirst && refusal.account.budget.name == "shared" && refusal.resetsAt.description == "2026-11-22T00:00:00.000Z")
        #expect(refusal.message.contains("$0.0000 spent and $0.9000 reserved of $1.00 per day"))
        #expect(Set(meter.halts(now: evening).keys) == [a, b], "a refusal exhausts the budget for all its agents")
        // Settling for less does not lift the halt within the window.
        _ = meter.settle(r1, cost: Charge(usd: 0.1, tokens: 5))
        meter.release(r2)
        _ = meter.settle(r3, cost: Charge(usd: 0.1, tokens: 5))
        guard case .failure(let again) = meter.reserve(a, Charge(usd: 0.01, tokens: 1), now: evening) else {
            Issue.record("an exhausted budget stays exhausted until its window ends")
            return
        }
        #expect(!again.isFirst)
        // The next day it is open again, and the halt is over.
        let tomorrow = Timestamp(milliseconds: evening.milliseconds + 7 * 3_600_000)
        #expect(meter.halts(now: tomorrow).isEmpty)
        guard case .success = meter.reserve(a, call, now: tomorrow) else {
            Issue.record("a new window starts empty")
            return
        }
    }

    /// `halts` skips the accounts with no spend and no refusal (a fleet of thousands of
    /// perAgent Budgets has millions of accounts, and the controller asks at every pass):
    /// it must still name exactly the agents of the exhausted halting limits in `status`.
    @Test func haltsAreTheExhaustedHaltingLimitsOfTheStatus() {
        func expected(_ meter: BudgetMeter) -> [ResourceID: String] {
            var result: [ResourceID: String] = [:]
            for status in meter.status(now: evening) where status.exhausted && status.onExceeded == .halt {
                let agents = status.account.agent.map { [$0] } ?? (status.account.budget.name == "shared" ? [a, b] : [])
                for agent in agents where result[agent] == nil { result[agent] = status.account.budget.name }
            }
            return result
        }
        func names(_ meter: BudgetMeter) -> [ResourceID: String] { meter.halts(now: evening).mapValues(\.account.budget.name) }
        var meter = BudgetMeter()
        meter.configure(fleet)
        #expect(names(meter).isEmpty && expected(meter).isEmpty)
        // c's perAgent budget, exhausted by what it spent (its alert-only one too: no halt).
        guard case .success(let r) = meter.reserve(c, Charge(usd: 0, tokens: 900), now: evening) else {
            Issue.record("900 tokens fit in 1,000")
            return
        }
        _ = meter.settle(r, cost: Charge(usd: 0, tokens: 1_000))
        #expect(names(meter) == [c: "each"] && expected(meter) == [c: "each"])
        // a's shared budget, exhausted by a refusal: both of its agents halt.
        _ = meter.reserve(a, Charge(usd: 2, tokens: 1), now: evening)
        #expect(names(meter) == [a: "shared", b: "shared", c: "each"] && expected(meter) == names(meter))
        // A zero limit exhausts every account of its budget, spent or not.
        var zero = BudgetMeter()
        zero.configure(
            validate(
                fleetYAML.replacingOccurrences(of: "limits: [{window: day, tokens: 1000}]", with: "limits: [{window: day, tokens: 0}]")
            ).fleet)
        #expect(names(zero) == expected(zero))
    }

    @Test func raisingTheLimitLiftsTheHalt() throws {
        var meter = BudgetMeter()
        meter.configure(fleet)
        guard case .failure = meter.reserve(a, Charge(usd: 2, tokens: 1), now: evening) else {
            Issue.record("$2 > $1")
            return
        }
        #expect(meter.halts(now: evening)[a] != nil)
        let raised = validate(fleetYAML.replacingOccurrences(of: "{window: day, usd: 1}", with: "{window: day, usd: 5}"))
        meter.configure(raised.fleet)
        #expect(meter.halts(now: evening).isEmpty)
        guard case .success = meter.reserve(a, Charge(usd: 2, tokens: 1), now: evening) else {
            Issue.record("$2 < $5")
            return
        }
    }

    @Test func thresholdsAreReportedOncePerWindow() {
        var meter = BudgetMeter()
        meter.configure(fleet)
        func spend(_ usd: Double) -> [BudgetMeter.Notice] {
            guard case .success(let r) = meter.reserve(a, Charge(usd: usd, tokens: 1), now: evening) else { return [] }
            return meter.settle(r, cost: Charge(usd: usd, tokens: 1))
        }
        #expect(spend(0.4).isEmpty)
        #expect(spend(0.2).map(\.kind) == [.threshold(50)])
        #expect(spend(0.3).map(\.kind) == [.threshold(80)])
        #expect(spend(0.05).isEmpty)
        let status = meter.status(now: evening).first { $0.account.budget.name == "shared" && $0.window == .day }
        #expect(status.map { Int($0.percentUsed.rounded()) } == 95)
    }

    @Test func aSettlementReportsEveryLimitItCrossesDayThenMonth() {
        var meter = BudgetMeter()
        meter.configure(fleet)
        func spend(reserving: Charge, cost: Charge) -> [String] {
            guard case .success(let r) = meter.reserve(a, reserving, now: evening) else { return ["refused"] }
            return meter.settle(r, cost: cost).map { "\($0.window.rawValue) \($0.kind)" }
        }
        #expect(
            spend(reserving: Charge(usd: 0.9, tokens: 90_000), cost: Charge(usd: 0.9, tokens: 90_000)) == [
                "day threshold(50)", "day threshold(80)", "month threshold(50)", "month threshold(80)",
            ])
        // The provider reported more than was reserved: both limits are passed at once.
        #expect(
            spend(reserving: Charge(usd: 0.05, tokens: 1), cost: Charge(usd: 0.2, tokens: 20_000)) == ["day exceeded", "month exceeded"])
        #expect(spend(reserving: Charge(usd: 0, tokens: 0), cost: .zero) == ["refused"])
        guard case .failure = meter.reserve(b, .zero, now: evening) else {
            Issue.record("the budget b shares with a is past its cap")
            return
        }
    }

    @Test func perAgentBudgetsAndAlertBudgets() {
        var meter = BudgetMeter()
        meter.configure(fleet)
        // c's perAgent budget caps c alone; the alert budget never refuses.
        guard case .success(let r) = meter.reserve(c, Charge(usd: 5, tokens: 900), now: evening) else {
            Issue.record("900 tokens fit in 1000, and an alert budget does not refuse")
            return
        }
        let notices = meter.settle(r, cost: Charge(usd: 5, tokens: 900))
        #expect(notices.map(\.kind) == [.exceeded], "the alert budget reports its cap")
        #expect(meter.halts(now: evening).isEmpty, "alert budgets halt nothing")
        guard case .failure(let refusal) = meter.reserve(c, Charge(usd: 0, tokens: 101), now: evening) else {
            Issue.record("1001 tokens pass c's own cap")
            return
        }
        #expect(refusal.account.agent == c)
        #expect(Set(meter.halts(now: evening).keys) == [c])
    }

    @Test func spendRestoredFromTheLedgerCounts() {
        var meter = BudgetMeter()
        meter.configure(fleet)
        meter.restore(b, .day, at: BudgetSpec.Window.day.interval(containing: evening).lowerBound, Charge(usd: 0.95, tokens: 100))
        guard case .failure = meter.reserve(a, Charge(usd: 0.1, tokens: 1), now: evening) else {
            Issue.record("b's restored spend counts against the shared budget")
            return
        }
    }
}
