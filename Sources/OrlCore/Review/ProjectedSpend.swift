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
