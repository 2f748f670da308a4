/// Dollars and tokens: what a call costs, what a budget has spent.
public struct Charge: Sendable, Hashable {
    public var usd: Double
    public var tokens: Int

    public init(usd: Double, tokens: Int) {
        self.usd = usd
        self.tokens = tokens
    }

    public static let zero = Charge(usd: 0, tokens: 0)

    // Saturating: token counts come from providers and manifests, and a trap here
    // would stop the gateway for every agent.
    public static func + (lhs: Charge, rhs: Charge) -> Charge {
        Charge(usd: lhs.usd + rhs.usd, tokens: lhs.tokens.saturatingAdding(rhs.tokens))
    }
    public static func - (lhs: Charge, rhs: Charge) -> Charge {
        Charge(usd: lhs.usd - rhs.usd, tokens: lhs.tokens.saturatingSubtracting(rhs.tokens))
    }
    // In place, so that a dictionary's entry is looked up once.
    static func += (lhs: inout Charge, rhs: Charge) { lhs = lhs + rhs }
    static func -= (lhs: inout Charge, rhs: Charge) { lhs = lhs - rhs }
}

extension BudgetSpec.Window {
    /// The calendar day or month, in UTC, that holds the instant.
    public func interval(containing instant: Timestamp) -> Range<Timestamp> {
        let date = instant.civilDate
        switch self {
        case .day:
            return date.midnight..<CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1).midnight
        case .month:
            let first = CivilDate(year: date.year, month: date.month, day: 1)
            return first.midnight..<first.nextMonth.midnight
        }
    }
}

/// Budgets as hard caps: every call reserves its worst case against every budget that
/// covers its agent before it is forwarded, and is refused when that does not fit, so
/// concurrent calls can never together spend past a cap. Settling replaces the
/// reservation with what the provider reports.
///
/// A value: the gateway keeps one behind a lock. Spend is kept per agent and window, so
/// a budget's spend is always that of the agents it covers now (an apply that widens a
/// budget brings the new agents' spend with them).
public struct BudgetMeter: Sendable {
    /// One budget's coverage: a shared budget has one account for all its agents; a
    /// perAgent budget one per agent.
    public struct Account: Sendable, Hashable, Comparable {
        public var budget: ResourceID
        /// The agent of a perAgent budget's account.
        public var agent: ResourceID?

        public init(budget: ResourceID, agent: ResourceID?) {
            self.budget = budget
            self.agent = agent
        }

        public static func < (lhs: Account, rhs: Account) -> Bool {
            (lhs.budget, lhs.agent?.description ?? "") < (rhs.budget, rhs.agent?.description ?? "")
        }
    }

    /// A call's hold on its budgets, until settled or released.
    public struct Reservation: Sendable, Hashable {
        public let number: Int
        public let agent: ResourceID
        public let charge: Charge
        /// When the call began: its spend counts in the windows that hold this instant.
        public let at: Timestamp
    }

    /// Why a call was refused: the first limit it would break.
    public struct Refusal: Error, Sendable, Hashable {
        public var account: Account
        public var window: BudgetSpec.Window
        public var resetsAt: Timestamp
        public var message: String
        /// The first refusal of the account in this window: worth an event, and a halt.
        public var isFirst: Bool
    }

    /// Something worth an event: a threshold crossed, or a halting budget exhausted.
    public struct Notice: Sendable, Hashable {
        public enum Kind: Sendable, Hashable {
            case threshold(Int)
            case exceeded
        }

        public var account: Account
        public var window: BudgetSpec.Window
        public var kind: Kind
        public var message: String
    }

    /// Why the agents of an exhausted `halt` budget are halted, and until when.
    public struct Halt: Sendable, Hashable {
        public var account: Account
        public var message: String
        public var resumesAt: Timestamp
    }

    /// One limit of one account, for `orlctl budget status`.
    public struct LimitStatus: Sendable, Hashable {
        public var account: Account
        public var window: BudgetSpec.Window
        public var limit: BudgetSpec.Limit
        public var spent: Charge
        public var reserved: Charge
        public var resetsAt: Timestamp
        public var onExceeded: BudgetSpec.OnExceeded
        public var exhausted: Bool

        /// The larger of the dollar and token shares, in percent.
        public var percentUsed: Double {
            max(
                limit.usd.map { $0 > 0 ? spent.usd / $0 * 100 : 100 } ?? 0,
                limit.tokens.map { $0 > 0 ? Double(spent.tokens) / Double($0) * 100 : 100 } ?? 0)
        }
    }

    fileprivate struct Budget: Sendable {
        var id: ResourceID
        var spec: BudgetSpec
        var agents: [ResourceID]
    }

    private struct Bucket: Hashable {
        var window: BudgetSpec.Window
        var start: Timestamp
    }

    /// An account's limit in one window: what exhaustion and notices are remembered by.
    private struct Mark: Hashable {
        var account: Account
        var bucket: Bucket
    }

    private var budgets: [ResourceID: Budget] = [:]
    private var budgetsOf: [ResourceID: [ResourceID]] = [:]
    private var settled: [ResourceID: [Bucket: Charge]] = [:]
    private var reserved: [ResourceID: Charge] = [:]
    private var open: [Int: Reservation] = [:]
    private var lastNumber = 0
    /// Exhausted by a refusal, with the limit then in force: raising it lifts the halt.
    private var exhausted: [Mark: BudgetSpec.Limit] = [:]
    /// Thresholds already reported, so that each is reported once per window.
    private var reported: [Mark: Set<Int>] = [:]
    private var prunedOn: Timestamp?

    public init() {}

    /// The applied Budgets and the agents each covers: worked out from a fleet apart
    /// from the meter, so that a gateway computes it outside the lock its calls take
    /// (matching every Budget's selector against every Agent takes milliseconds in a
    /// fleet of thousands).
    public struct Coverage: Sendable {
        fileprivate var budgets: [ResourceID: Budget] = [:]
        fileprivate var budgetsOf: [ResourceID: [ResourceID]] = [:]

        fileprivate init() {}

        public init(_ fleet: Fleet) {
            for resource in fleet.resources(of: .budget) {
                guard let spec = resource.budget else { continue }
                let agents = fleet.agents(selectedBy: spec.appliesTo, namespace: resource.metadata.namespace).map(\.id)
                budgets[resource.id] = Budget(id: resource.id, spec: spec, agents: agents)
                for agent in agents { budgetsOf[agent, default: []].append(resource.id) }
            }
        }
    }

    /// Takes the applied Budgets (and the agents they cover) as they are now.
    public mutating func configure(_ fleet: Fleet) { _ = configure(Coverage(fleet)) }

    /// Takes Budgets' coverage worked out beforehand; returns the one it replaces (for
    /// the caller to release after its lock).
    @discardableResult
    public mutating func configure(_ coverage: Coverage) -> Coverage {
        var previous = Coverage()
        (previous.budgets, budgets) = (budgets, coverage.budgets)
        (previous.budgetsOf, budgetsOf) = (budgetsOf, coverage.budgetsOf)
        return previous
    }

    /// Spend recorded before this meter existed (the ledger's sums, at start-up).
    public mutating func restore(_ agent: ResourceID, _ window: BudgetSpec.Window, at instant: Timestamp, _ charge: Charge) {
        let bucket = Bucket(window: window, start: window.interval(containing: instant).lowerBound)
        settled[agent, default: [:]][bucket, default: .zero] = settled[agent, default: [:]][bucket, default: .zero] + charge
    }

    /// Reserves the call's worst case against every budget covering the agent, or says
    /// which limit it would break. `halt` budgets refuse; `alert` budgets only observe.
    public mutating func reserve(_ agent: ResourceID, _ charge: Charge, now: Timestamp) -> Result<Reservation, Refusal> {
        prune(now)
        for account in accounts(of: agent) {
            guard let budget = budgets[account.budget], budget.spec.onExceeded == .halt else { continue }
            for limit in budget.spec.limits {
                let interval = limit.window.interval(containing: now)
                let bucket = Bucket(window: limit.window, start: interval.lowerBound)
                let spent = self.spent(account, bucket)
                let held = self.held(account)
                let mark = Mark(account: account, bucket: bucket)
                let exhaustedBefore = exhausted[mark].map { !Self.raised(limit, over: $0) } ?? false
                var broken: String?
                if let usd = limit.usd, exhaustedBefore || spent.usd + held.usd + charge.usd > usd {
                    broken =
                        "\(Money.format(spent.usd, decimals: 4)) spent and \(Money.format(held.usd, decimals: 4)) reserved of \(Money.format(usd)) per \(limit.window.rawValue); this call may cost up to \(Money.format(charge.usd, decimals: 4))"
                } else if let tokens = limit.tokens, exhaustedBefore || (spent + held + charge).tokens > tokens {
                    broken =
                        "\(spent.tokens) tokens spent and \(held.tokens) reserved of \(tokens) per \(limit.window.rawValue); this call may use up to \(charge.tokens)"
                }
                if let broken {
                    let isFirst = !exhaustedBefore
                    if isFirst { exhausted[mark] = limit }
                    return .failure(
                        Refusal(
                            account: account, window: limit.window, resetsAt: interval.upperBound,
                            message: "budget \(Self.name(account)) is exhausted: \(broken); it resets at \(interval.upperBound)",
                            isFirst: isFirst))
                }
            }
        }
        lastNumber += 1
        let reservation = Reservation(number: lastNumber, agent: agent, charge: charge, at: now)
        open[lastNumber] = reservation
        reserved[agent, default: .zero] += charge
        return .success(reservation)
    }

    /// The store's lines a call of `agent` at `now` is reserved against when the state is
    /// shared (`BudgetReservations`): each limit of each halting budget covering it, and
    /// what this meter knows was spent in each (the ledger's sums at start-up and its own
    /// calls since), from which the store starts a line it has not counted yet.
    public func lines(of agent: ResourceID, now: Timestamp) -> (lines: [BudgetLine], spent: [BudgetLineKey: BudgetAmount]) {
        var lines: [BudgetLine] = []
        var spent: [BudgetLineKey: BudgetAmount] = [:]
        for account in accounts(of: agent) {
            guard let budget = budgets[account.budget], budget.spec.onExceeded == .halt else { continue }
            for limit in budget.spec.limits {
                let line = BudgetLine(account: account, limit: limit, now: now)
                let bucket = Bucket(window: limit.window, start: line.windowStart)
                lines.append(line)
                spent[line.key] = BudgetAmount(self.spent(account, bucket), roundingUp: false)
            }
        }
        return (lines.sorted(), spent)
    }

    /// The store refused a call (the calls of every gateway of the state filled `line`):
    /// remembered as this meter's own refusal is, so that the agent halts.
    public mutating func refusal(by line: BudgetLineState, agent: ResourceID, charge: Charge, now: Timestamp) -> Refusal {
        for account in accounts(of: agent) {
            guard let budget = budgets[account.budget] else { continue }
            for limit in budget.spec.limits where BudgetLine(account: account, limit: limit, now: now).key == line.key {
                let interval = limit.window.interval(containing: now)
                let mark = Mark(account: account, bucket: Bucket(window: limit.window, start: interval.lowerBound))
                let isFirst = exhausted[mark] == nil
                exhausted[mark] = limit
                let (spent, held) = (line.spent.charge, line.reserved.charge)
                let broken =
                    if let cap = line.cap.microUSD,
                        (line.spent.microUSD ?? 0) + (line.reserved.microUSD ?? 0) + BudgetAmount.micro(charge.usd, roundingUp: true) > cap
                    {
                        "\(Money.format(spent.usd, decimals: 4)) spent and \(Money.format(held.usd, decimals: 4)) reserved of \(Money.format(Double(cap) / 1_000_000)) per \(limit.window.rawValue) by every gateway of the state; this call may cost up to \(Money.format(charge.usd, decimals: 4))"
                    } else {
                        "\(spent.tokens) tokens spent and \(held.tokens) reserved of \(line.cap.tokens ?? 0) per \(limit.window.rawValue) by every gateway of the state; this call may use up to \(charge.tokens)"
                    }
                return Refusal(
                    account: account, window: limit.window, resetsAt: interval.upperBound,
                    message: "budget \(Self.name(account)) is exhausted: \(broken); it resets at \(interval.upperBound)", isFirst: isFirst)
            }
        }
        // The budget changed since the call's lines were taken: refused all the same.
        return Refusal(
            account: Account(
                budget: ResourceID(kind: ResourceKind.budget.rawValue, namespace: line.key.budgetNamespace, name: line.key.budgetName),
                agent: nil),
            window: BudgetSpec.Window(rawValue: line.key.window) ?? .day, resetsAt: now,
            message: "budget \(line.key.budgetNamespace)/\(line.key.budgetName) is exhausted", isFirst: false)
    }

    /// Replaces the reservation by what the call cost; returns the thresholds it crossed.
    public mutating func settle(_ reservation: Reservation, cost: Charge) -> [Notice] {
        guard open.removeValue(forKey: reservation.number) != nil else { return [] }
        reserved[reservation.agent, default: .zero] -= reservation.charge
        // Every call settles: the accounts are looked up once for both windows, and a
        // window no limit watches is only added to.
        let accounts = accounts(of: reservation.agent)
        var notices: [Notice] = []
        for window in [BudgetSpec.Window.day, .month] {
            let bucket = Bucket(window: window, start: window.interval(containing: reservation.at).lowerBound)
            let limits = marks(of: accounts, window: window, bucket: bucket)
            let before = limits.map { mark, limit in percent(spent(mark.account, bucket), limit) }
            settled[reservation.agent, default: [:]][bucket, default: .zero] += cost
            for ((mark, limit), before) in zip(limits, before) {
                notices += crossings(mark, limit: limit, from: before, to: percent(spent(mark.account, bucket), limit))
            }
        }
        return notices
    }

    /// Gives the reservation back: the call was not made, or failed without usage.
    public mutating func release(_ reservation: Reservation) {
        guard open.removeValue(forKey: reservation.number) != nil else { return }
        reserved[reservation.agent, default: .zero] -= reservation.charge
    }

    /// The agents to halt now, each with the first exhausted `halt` budget covering it.
    public func halts(now: Timestamp) -> [ResourceID: Halt] {
        // Only an account with spend, or refused before, can be exhausted (unless a limit
        // is zero): the others are skipped, as a fleet of thousands of perAgent budgets
        // has millions of accounts, and this runs at every reconcile pass.
        var candidates = Set(settled.keys)
        for mark in exhausted.keys { if let agent = mark.account.agent { candidates.insert(agent) } }
        let intervals = Dictionary(uniqueKeysWithValues: [BudgetSpec.Window.day, .month].map { ($0, $0.interval(containing: now)) })
        var result: [ResourceID: Halt] = [:]
        for budget in budgets.values.sorted(by: { $0.id < $1.id }) where budget.spec.onExceeded == .halt {
            let everyAccount = budget.spec.limits.contains { ($0.usd ?? 1) <= 0 || ($0.tokens ?? 1) <= 0 }
            let accounts =
                budget.spec.scope == .shared
                ? [Account(budget: budget.id, agent: nil)]
                : budget.agents.lazy.filter { everyAccount || candidates.contains($0) }.map { Account(budget: budget.id, agent: $0) }
            for account in accounts {
                for limit in budget.spec.limits {
                    let interval = intervals[limit.window] ?? limit.window.interval(containing: now)
                    let bucket = Bucket(window: limit.window, start: interval.lowerBound)
                    let spent = self.spent(account, bucket)
                    let refused = exhausted[Mark(account: account, bucket: bucket)].map { !Self.raised(limit, over: $0) } ?? false
                    let over = limit.usd.map { spent.usd >= $0 } == true || limit.tokens.map { spent.tokens >= $0 } == true
                    guard refused || over else { continue }
                    for agent in account.agent.map({ [$0] }) ?? budget.agents where result[agent] == nil {
                        result[agent] = Halt(
                            account: account,
                            message:
                                "budget \(Self.name(account)) is exhausted for this \(limit.window.rawValue); resumes at \(interval.upperBound)",
                            resumesAt: interval.upperBound)
                    }
                }
            }
        }
        return result
    }

    /// Every limit of every account, in budget order.
    public func status(now: Timestamp) -> [LimitStatus] {
        var result: [LimitStatus] = []
        for budget in budgets.values.sorted(by: { $0.id < $1.id }) {
            let accounts =
                budget.spec.scope == .shared
                ? [Account(budget: budget.id, agent: nil)] : budget.agents.map { Account(budget: budget.id, agent: $0) }
            for account in accounts {
                for limit in budget.spec.limits {
                    let interval = limit.window.interval(containing: now)
                    let bucket = Bucket(window: limit.window, start: interval.lowerBound)
                    let spent = self.spent(account, bucket)
                    let refused = exhausted[Mark(account: account, bucket: bucket)].map { !Self.raised(limit, over: $0) } ?? false
                    let over = limit.usd.map { spent.usd >= $0 } == true || limit.tokens.map { spent.tokens >= $0 } == true
                    result.append(
                        LimitStatus(
                            account: account, window: limit.window, limit: limit, spent: spent, reserved: held(account),
                            resetsAt: interval.upperBound, onExceeded: budget.spec.onExceeded, exhausted: refused || over))
                }
            }
        }
        return result
    }

    // MARK: Helpers

    private func accounts(of agent: ResourceID) -> [Account] {
        (budgetsOf[agent] ?? []).compactMap { id in
            budgets[id].map { Account(budget: id, agent: $0.spec.scope == .shared ? nil : agent) }
        }
    }

    private func members(_ account: Account) -> [ResourceID] {
        account.agent.map { [$0] } ?? budgets[account.budget]?.agents ?? []
    }

    private func spent(_ account: Account, _ bucket: Bucket) -> Charge {
        members(account).reduce(.zero) { $0 + (settled[$1]?[bucket] ?? .zero) }
    }

    private func held(_ account: Account) -> Charge {
        members(account).reduce(.zero) { $0 + (reserved[$1] ?? .zero) }
    }

    /// The limits in `window` of the accounts (those covering an agent).
    private func marks(of accounts: [Account], window: BudgetSpec.Window, bucket: Bucket) -> [(Mark, BudgetSpec.Limit)] {
        var marks: [(Mark, BudgetSpec.Limit)] = []
        for account in accounts {
            guard let limits = budgets[account.budget]?.spec.limits else { continue }
            for limit in limits where limit.window == window { marks.append((Mark(account: account, bucket: bucket), limit)) }
        }
        return marks
    }

    private func percent(_ spent: Charge, _ limit: BudgetSpec.Limit) -> Double {
        max(
            limit.usd.map { $0 > 0 ? spent.usd / $0 * 100 : 100 } ?? 0,
            limit.tokens.map { $0 > 0 ? Double(spent.tokens) / Double($0) * 100 : 100 } ?? 0)
    }

    private mutating func crossings(_ mark: Mark, limit: BudgetSpec.Limit, from before: Double, to after: Double) -> [Notice] {
        guard let budget = budgets[mark.account.budget] else { return [] }
        var notices: [Notice] = []
        for threshold in budget.spec.alertThresholds.sorted() where before < Double(threshold) && after >= Double(threshold) {
            guard reported[mark, default: []].insert(threshold).inserted else { continue }
            notices.append(
                Notice(
                    account: mark.account, window: mark.bucket.window, kind: .threshold(threshold),
                    message: "budget \(Self.name(mark.account)) reached \(threshold)% of its \(mark.bucket.window.rawValue) limit"))
        }
        if before < 100 && after >= 100, reported[mark, default: []].insert(100_000).inserted {
            notices.append(
                Notice(
                    account: mark.account, window: mark.bucket.window, kind: .exceeded,
                    message: "budget \(Self.name(mark.account)) spent its \(mark.bucket.window.rawValue) limit"))
        }
        return notices
    }

    /// Forgets buckets, marks and reports of windows that are over, once a day.
    private mutating func prune(_ now: Timestamp) {
        let today = BudgetSpec.Window.day.interval(containing: now).lowerBound
        guard today != prunedOn else { return }
        prunedOn = today
        let current = Set([BudgetSpec.Window.day, .month].map { Bucket(window: $0, start: $0.interval(containing: now).lowerBound) })
        settled = settled.mapValues { $0.filter { current.contains($0.key) } }
        exhausted = exhausted.filter { current.contains($0.key.bucket) }
        reported = reported.filter { current.contains($0.key.bucket) }
    }

    private static func raised(_ limit: BudgetSpec.Limit, over before: BudgetSpec.Limit) -> Bool {
        (limit.usd ?? .infinity) > (before.usd ?? .infinity) || (limit.tokens ?? .max) > (before.tokens ?? .max)
    }

    static func name(_ account: Account) -> String {
        account.agent.map { "\(account.budget.namespace)/\(account.budget.name) (agent \($0.name))" }
            ?? "\(account.budget.namespace)/\(account.budget.name)"
    }
}
