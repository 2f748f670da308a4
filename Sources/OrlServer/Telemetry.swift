import Dispatch
public import OrlCore

/// What the controller tells the outside about itself: Prometheus metrics (`/metrics`)
/// and OpenTelemetry spans. The controller composes one and hands it to the gateway,
/// which every model, task and tool call passes through. `off` records nothing.
public final class Telemetry: Sendable {
    /// Nil: no counters are kept (the gateway's benchmark compares with and without).
    public let metrics: Metrics?
    /// Nil: OTEL_EXPORTER_OTLP_ENDPOINT is not set.
    public let tracer: Tracer?
    /// The state's gauges, read at each scrape (a connection of their own).
    let gauges: (@Sendable () throws(StoreError) -> FleetGauges)?
    private let queue = DispatchQueue(label: "orl.metrics.scrape")

    public init(
        metrics: Metrics? = Metrics(), tracer: Tracer? = nil, gauges: (@Sendable () throws(StoreError) -> FleetGauges)? = nil
    ) {
        self.metrics = metrics
        self.tracer = tracer
        self.gauges = gauges
    }

    public static let off = Telemetry(metrics: nil)

    /// The scrape, off the cooperative pool: the gauges are a SQLite read.
    func scrape(budgets: [BudgetMeter.LimitStatus]) async -> String {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.exposition(budgets: budgets)) }
        }
    }

    /// The whole exposition: the counters and histograms, the budgets from the meter,
    /// then the state's gauges.
    public func exposition(budgets: [BudgetMeter.LimitStatus]) -> String {
        var text = ""
        text.reserveCapacity(64 << 10)
        metrics?.render(into: &text)
        Self.render(budgets: budgets, into: &text)
        if let gauges {
            do {
                Self.render(try gauges(), into: &text)
                Self.gauge("orl_state_readable", "1 when the scrape could read the state, 0 when it could not.", [([], 1)], into: &text)
            } catch {
                Self.gauge("orl_state_readable", "1 when the scrape could read the state, 0 when it could not.", [([], 0)], into: &text)
            }
        }
        return text
    }

    typealias Sample = (labels: [(String, String)], value: Double)

    static func gauge(_ name: String, _ help: String, _ samples: [Sample], type: String = "gauge", into text: inout String) {
        guard !samples.isEmpty else { return }
        Metrics.header(name, help, type, into: &text)
        for sample in samples { Metrics.sample(name, sample.labels, sample.value, into: &text) }
    }

    static func render(budgets: [BudgetMeter.LimitStatus], into text: inout String) {
        func labels(_ status: BudgetMeter.LimitStatus) -> [(String, String)] {
            [
                ("namespace", status.account.budget.namespace), ("budget", status.account.budget.name),
                ("agent", status.account.agent?.name ?? ""), ("window", status.window.rawValue),
            ]
        }
        let ordered = budgets.sorted { ($0.account, $0.window.rawValue) < ($1.account, $1.window.rawValue) }
        gauge(
            "orl_budget_limit_usd", "A budget's dollar limit per window (per agent for a perAgent budget).",
            ordered.compactMap { s in s.limit.usd.map { (labels(s), $0) } }, into: &text)
        gauge(
            "orl_budget_limit_tokens", "A budget's token limit per window.",
            ordered.compactMap { s in s.limit.tokens.map { (labels(s), Double($0)) } }, into: &text)
        gauge(
            "orl_budget_spent_usd", "Dollars spent in the budget's current window.", ordered.map { (labels($0), $0.spent.usd) }, into: &text
        )
        gauge(
            "orl_budget_spent_tokens", "Tokens spent in the budget's current window.",
            ordered.map { (labels($0), Double($0.spent.tokens)) },
            into: &text)
        gauge(
            "orl_budget_reserved_usd", "Dollars reserved by calls in flight (their worst case).",
            ordered.map { (labels($0), $0.reserved.usd) }, into: &text)
        gauge(
            "orl_budget_reserved_tokens", "Tokens reserved by calls in flight.", ordered.map { (labels($0), Double($0.reserved.tokens)) },
            into: &text)
        gauge(
            "orl_budget_resets_at_timestamp_seconds", "When the budget's current window ends, in seconds since the epoch.",
            ordered.map { (labels($0), Double($0.resetsAt.milliseconds) / 1000) }, into: &text)
        gauge(
            "orl_budget_exhausted", "1 when the budget is exhausted in its current window.",
            ordered.map { (labels($0), $0.exhausted ? 1 : 0) }, into: &text)
    }

    static let phases: [AgentPhase] = [.pending, .running, .crashLoopBackOff, .stopped, .suspended, .halted]

    static func render(_ gauges: FleetGauges, into text: inout String) {
        var phases: [Sample] = []
        phases.reserveCapacity(gauges.agents.count * Self.phases.count)
        for agent in gauges.agents {
            for phase in Self.phases {
                phases.append(
                    (
                        [("namespace", agent.id.namespace), ("agent", agent.id.name), ("phase", phase.rawValue)],
                        agent.phase == phase ? 1 : 0
                    ))
            }
        }
        gauge("orl_agent_phase", "1 for each agent's current phase, 0 for the others.", phases, into: &text)
        gauge(
            "orl_agent_restarts_total", "Restarts of each agent's process, as the controller counts them.",
            gauges.agents.map { ([("namespace", $0.id.namespace), ("agent", $0.id.name)], Double($0.restarts)) }, type: "counter",
            into: &text)
        gauge(
            "orl_agent_crashes_total", "Exits of each agent's process that were failures.",
            gauges.agents.map { ([("namespace", $0.id.namespace), ("agent", $0.id.name)], Double($0.crashes)) }, type: "counter",
            into: &text)
        gauge(
            "orl_run_steps", "Steps of the runs the state keeps, by state.",
            gauges.steps.map { ([("namespace", $0.namespace), ("state", $0.state.rawValue)], Double($0.count)) }, into: &text)
        var approvals: [String: Int] = [:]
        for count in gauges.steps where count.state == .waitingApproval { approvals[count.namespace, default: 0] += count.count }
        gauge(
            "orl_approvals_pending", "Approval gates waiting for a decision.",
            approvals.sorted { $0.key < $1.key }.map { ([("namespace", $0.key)], Double($0.value)) }, into: &text)
        let sources = gauges.sources
        gauge(
            "orl_source_info", "Each git source's applied revision (a commit id; empty before the first apply) and last result.",
            sources.map {
                ([("source", $0.name), ("revision", $0.lastApplied ?? ""), ("result", $0.result?.rawValue ?? "")], 1)
            }, into: &text)
        var results: [Sample] = []
        for source in sources {
            for result in SourceRecord.Result.allCases {
                results.append(([("source", source.name), ("result", result.rawValue)], source.result == result ? 1 : 0))
            }
        }
        gauge("orl_source_sync_result", "1 for the result of each source's last sync attempt, 0 for the others.", results, into: &text)
        gauge(
            "orl_source_consecutive_failures", "Failed sync attempts of each source since its last success.",
            sources.map { ([("source", $0.name)], Double($0.failures)) }, into: &text)
        gauge(
            "orl_source_last_applied_timestamp_seconds", "When each source last applied a revision.",
            sources.compactMap { s in s.lastAppliedAt.map { ([("source", s.name)], Double($0.milliseconds) / 1000) } }, into: &text)
        gauge(
            "orl_source_last_attempted_timestamp_seconds", "When each source last attempted a sync.",
            sources.compactMap { s in s.lastAttemptedAt.map { ([("source", s.name)], Double($0.milliseconds) / 1000) } }, into: &text)
        gauge(
            "orl_source_suspended", "1 when the source is suspended.", sources.map { ([("source", $0.name)], $0.isSuspended ? 1 : 0) },
            into: &text)
    }
}
