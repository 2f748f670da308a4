/// What a fleet can cost at worst, per day and per month, as its Budgets cap it: the
/// figure a reviewer compares before and after a change (as infracost does for cloud
/// cost). Only a Budget that halts caps spend; an agent no halting dollar limit covers
/// has no ceiling, and the fleet's ceiling is then unbounded for it.
public struct ProjectedSpend: Sendable, Hashable {
    /// Per Budget that caps: its ceiling per day and per month (a per-agent budget
    /// counts once per agent it covers).
    public struct Cap: Sendable, Hashable {
        public var budget: ResourceID
        public var day: Double
        public var month: Double
    }

    public var caps: [Cap]
    /// Agents no halting Budget with a dollar limit covers.
    public var uncapped: [ResourceID]

    /// The most the capped agents can spend: the sum of the caps (an agent under two
    /// budgets is bounded by each, so the sum bounds the whole).
    public var day: Double { caps.map(\.day).reduce(0, +) }
    public var month: Double { caps.map(\.month).reduce(0, +) }

    /// The longest month: a daily cap spent every day of it.
    static let daysPerMonth = 31.0

    public init(_ fleet: Fleet) {
        var caps: [Cap] = []
        var capped = Set<ResourceID>()
        for budget in fleet.resources(of: .budget) {
            guard let spec = budget.budget, spec.onExceeded == .halt else { continue }
            let daily = spec.limits.filter { $0.window == .day }.compactMap(\.usd).min()
            let monthly = spec.limits.filter { $0.window == .month }.compactMap(\.usd).min()
            guard daily != nil || monthly != nil else { continue }
            let agents = fleet.resources(of: .agent, namespace: budget.metadata.namespace).filter {
                spec.appliesTo.selects($0.metadata)
            }
            guard !agents.isEmpty else { continue }
            capped.formUnion(agents.map(\.id))
            // A month's cap also bounds a day; a day's cap, spent every day, bounds a month.
            let day = [daily, monthly].compactMap { $0 }.min()!
            let month = [monthly, daily.map { $0 * Self.daysPerMonth }].compactMap { $0 }.min()!
            let times = spec.scope == .perAgent ? Double(agents.count) : 1
            caps.append(Cap(budget: budget.id, day: day * times, month: month * times))
        }
        self.caps = caps
        uncapped = fleet.resources(of: .agent).map(\.id).filter { !capped.contains($0) }
    }

    /// `$150.00 per day, $4,650.00 per month` or `no ceiling: agent "x" has no halting budget`.
    public var description: String {
        let ceiling = "at most \(Money.format(day, rounding: .up)) a day, \(Money.format(month, rounding: .up)) a month"
        guard !uncapped.isEmpty else { return ceiling }
        let names = uncapped.map { Diagnostic.quoted($0.name) }.joined(separator: ", ")
        return "no ceiling: no halting Budget caps agent\(uncapped.count == 1 ? "" : "s") \(names)"
            + (caps.isEmpty ? "" : " (the others: \(ceiling))")
    }
}

extension Review {
    /// The spend ceiling before and after.
    public struct SpendChange: Sendable, Hashable {
        public var before: ProjectedSpend
        public var after: ProjectedSpend

        /// How much more the fleet can spend a month at worst; nil when head leaves an
        /// agent uncapped that base capped (or did not have), so the increase has no bound.
        public var monthlyIncrease: Double? {
            let newlyUncapped = Set(after.uncapped).subtracting(before.uncapped)
            guard newlyUncapped.isEmpty else { return nil }
            return after.month - before.month
        }

        public var dailyIncrease: Double? {
            Set(after.uncapped).subtracting(before.uncapped).isEmpty ? after.day - before.day : nil
        }

        /// `+$120.00 a month` / `-$5.00 a month` / `unbounded`.
        public var increaseDescription: String {
            guard let month = monthlyIncrease, let day = dailyIncrease else { return "unbounded (an agent is left uncapped)" }
            func signed(_ v: Double) -> String { v >= 0 ? "+" + Money.format(v, rounding: .up) : "-" + Money.format(-v, rounding: .up) }
            return "\(signed(day)) a day, \(signed(month)) a month"
        }

        /// Whether the worst case rises by more than `usd` a month.
        public func exceeds(_ usd: Double) -> Bool {
            guard let month = monthlyIncrease else { return true }
            return month > usd + 1e-9
        }
    }
}

/// What a fleet is projected to spend in a month (as infracost projects cloud cost):
/// each scheduled workflow's runs a month (from its cron expressions) times what one
/// run can spend (`RunCost`: every attempt of every step at its `maxTokens`, at the
/// dearer of its model's prices), and, where the ledger is given, each agent's recent
/// tokens priced at the model it has in this revision. An agent's projection is the
/// larger of the two (the scheduled runs are in the ledger too, so they are not added).
/// A month is an average one (365.2425 / 12 days).
public struct SpendProjection: Sendable, Hashable {
    public struct Workflow: Sendable, Hashable {
        public var workflow: ResourceID
        public var runsPerMonth: Double
        /// What one run can spend at most, over the steps with a token bound.
        public var perRun: Double
        /// Agent steps with no `maxTokens`: their spend has no bound to project.
        public var unboundedSteps: [String]

        public var month: Double { runsPerMonth * perRun }
    }

    public struct Agent: Sendable, Hashable {
        public var agent: ResourceID
        /// From the schedules: this agent's share of the scheduled runs.
        public var scheduled: Double
        /// From the ledger's recent tokens, a month of them at this revision's prices;
        /// nil without a ledger (or with no calls of this agent in it).
        public var observed: Double?

        public var month: Double { max(scheduled, observed ?? 0) }
    }

    /// Workflows with a schedule, by id.
    public var workflows: [Workflow]
    /// Agents with a projected spend, by id.
    public var agents: [Agent]

    public var month: Double { agents.map(\.month).reduce(0, +) }

    /// `workflow/name step "s"` of scheduled steps with no token bound.
    public var unbounded: [String] {
        workflows.filter { $0.runsPerMonth > 0 }.flatMap { w in
            w.unboundedSteps.map { "\(w.workflow.kind.lowercased())/\(w.workflow.name) step \(Diagnostic.quoted($0))" }
        }
    }

    public static let daysPerMonth = 365.2425 / 12

    public init(_ fleet: Fleet, observed: ObservedUsage? = nil) {
        var scheduled: [ResourceID: Double] = [:]
        var workflows: [Workflow] = []
        for resource in fleet.resources(of: .workflow) {
            guard let spec = resource.workflow else { continue }
            let runs = spec.triggers.filter { $0.type == .schedule }.compactMap { trigger -> Double? in
                guard let cron = trigger.cron?.value else { return nil }
                return (try? CronSchedule(parsing: cron))?.firingsPerMonth
            }.reduce(0, +)
            guard runs > 0 else { continue }
            let graph = WorkflowGraph(spec)
            guard let order = graph.topologicalOrder() else { continue }
            let agents = RunCost.agents(of: spec, namespace: resource.metadata.namespace, fleet: fleet).map { $0.map(\.agent) }
            // A run is served by one agent per step: at worst, the dearest.
            let steps = RunCost.bounded(spec, order: order, agents: agents, fleet: fleet).compactMap { $0.max { $0.usd < $1.usd } }
            for step in steps { scheduled[step.agent.id, default: 0] += step.usd * runs }
            workflows.append(
                Workflow(
                    workflow: resource.id, runsPerMonth: runs, perRun: steps.map(\.usd).reduce(0, +),
                    unboundedSteps: spec.steps.filter { $0.agent != nil && $0.maxTokens == nil }.map(\.id.value)))
        }
        var agents: [Agent] = []
        for agent in fleet.resources(of: .agent) {
            var projected = Agent(agent: agent.id, scheduled: scheduled[agent.id] ?? 0, observed: nil)
            if let observed, observed.days > 0, let usage = observed.tokens[agent.id], let price = RunCost.price(of: agent, fleet: fleet) {
                let usd = (Double(usage.prompt) * price.input + Double(usage.completion) * price.output) / 1_000_000
                projected.observed = usd * Self.daysPerMonth / observed.days
            }
            if projected.scheduled > 0 || projected.observed != nil { agents.append(projected) }
        }
        self.workflows = workflows.sorted { $0.workflow < $1.workflow }
        self.agents = agents.sorted { $0.agent < $1.agent }
    }
}

/// The tokens each agent spent recently, from the ledger: what a projection prices.
public struct ObservedUsage: Sendable, Hashable {
    public var tokens: [ResourceID: TokenUsage]
    /// How many days the tokens were spent over.
    public var days: Double

    public init(tokens: [ResourceID: TokenUsage], days: Double) {
        self.tokens = tokens
        self.days = days
    }
}

extension Review {
    /// The projected monthly spend before and after.
    public struct ProjectionChange: Sendable, Hashable {
        public var before: SpendProjection
        public var after: SpendProjection

        /// Nil when head schedules a step with no token bound that base did not: the
        /// projection then has no bound.
        public var monthlyIncrease: Double? {
            guard Set(after.unbounded).subtracting(before.unbounded).isEmpty else { return nil }
            return after.month - before.month
        }

        /// `+$120.00 a month` / `-$5.00 a month` / `unbounded (…)`.
        public var increaseDescription: String {
            guard let month = monthlyIncrease else {
                let steps = Set(after.unbounded).subtracting(before.unbounded).sorted()
                return "unbounded (\(steps.joined(separator: ", ")) \(steps.count == 1 ? "has" : "have") no maxTokens)"
            }
            return (month >= 0 ? "+" + Money.format(month, rounding: .up) : "-" + Money.format(-month, rounding: .up)) + " a month"
        }

        /// Whether the projection rises by more than `usd` a month (or loses its bound).
        public func exceeds(_ usd: Double) -> Bool {
            guard let month = monthlyIncrease else { return true }
            return month > usd + 1e-9
        }

        /// Per agent and per workflow, before and after (0 where absent), those that differ first.
        public var agentRows: [(id: ResourceID, before: Double, after: Double)] {
            rows(before.agents.map { ($0.agent, $0.month) }, after.agents.map { ($0.agent, $0.month) })
        }

        public var workflowRows: [(id: ResourceID, before: Double, after: Double)] {
            rows(before.workflows.map { ($0.workflow, $0.month) }, after.workflows.map { ($0.workflow, $0.month) })
        }

        private func rows(_ a: [(ResourceID, Double)], _ b: [(ResourceID, Double)]) -> [(id: ResourceID, before: Double, after: Double)] {
            let before = Dictionary(a, uniquingKeysWith: +)
            let after = Dictionary(b, uniquingKeysWith: +)
            return Set(before.keys).union(after.keys).sorted().map { ($0, before[$0] ?? 0, after[$0] ?? 0) }
        }
    }
}

extension Review {
    /// The rule SARIF files a rise of the spend ceiling or of the projected spend under.
    public static let spendRule = DiagnosticInfo(
        code: DiagnosticCode("review.spend-increase"), title: "Spend rises under review", severities: [.warning],
        summary:
            "The change raises what the fleet can spend at worst as its halting Budgets cap it, or what it is projected to spend a month from its schedules, token bounds and prices (and the ledger, when given).",
        help: "Check that the cost is intended; `orlctl review --max-cost-increase USD` fails a check when either rises by more.")

    /// The spend ceiling's and the projection's rises, one line each (nothing when neither rises).
    public var spendItems: [String] {
        var items: [String] = []
        if let spend, spend.monthlyIncrease.map({ $0 > 1e-9 }) ?? true {
            items.append(
                "spend ceiling: \(spend.increaseDescription) (before: \(spend.before.description); after: \(spend.after.description))")
        }
        if let projection, projection.monthlyIncrease.map({ $0 > 1e-9 }) ?? true {
            let rising = projection.agentRows.filter { $0.after > $0.before + 1e-9 }.map {
                "agent \(Diagnostic.quoted($0.id.name)) \(Money.format($0.before, rounding: .up)) → \(Money.format($0.after, rounding: .up))"
            }
            items.append(
                "projected spend: \(Money.format(projection.before.month, rounding: .up)) → \(Money.format(projection.after.month, rounding: .up)) a month, \(projection.increaseDescription)"
                    + (rising.isEmpty ? "" : " (\(rising.joined(separator: ", ")))"))
        }
        return items
    }
}
