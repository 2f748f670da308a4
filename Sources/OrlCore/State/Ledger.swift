/// One model call the gateway forwarded: what `orlctl usage` lists and what budgets'
/// spend is summed from.
public struct LedgerEntry: Sendable, Hashable {
    public var number: Int
    /// When the call began: its spend counts in the budget windows holding this instant.
    public var time: Timestamp
    public var agent: ResourceID
    /// `provider/model`.
    public var model: String
    public var usage: TokenUsage
    public var usd: Double
    public var latencyMilliseconds: Int
    /// The gateway's id for the call, also sent to the agent as `x-request-id`.
    public var requestID: String
    /// `ok`, or what went wrong (an upstream error is charged what it reported, if anything).
    public var outcome: String
    /// The workflow run and step the agent was serving, when there is one.
    public var run: String?
    public var step: String?

    public init(
        number: Int = 0, time: Timestamp, agent: ResourceID, model: String, usage: TokenUsage, usd: Double, latencyMilliseconds: Int,
        requestID: String, outcome: String, run: String? = nil, step: String? = nil
    ) {
        self.number = number
        self.time = time
        self.agent = agent
        self.model = model
        self.usage = usage
        self.usd = usd
        self.latencyMilliseconds = latencyMilliseconds
        self.requestID = requestID
        self.outcome = outcome
        self.run = run
        self.step = step
    }
}

/// One agent's calls of one model on one UTC day, kept by retention once the calls
/// themselves are deleted (`ledger_daily`).
public struct LedgerDay: Sendable, Hashable {
    /// `YYYY-MM-DD`, UTC.
    public var day: String
    public var agent: ResourceID
    public var model: String
    public var calls: Int
    public var usage: TokenUsage
    public var usd: Double

    public init(day: String, agent: ResourceID, model: String, calls: Int, usage: TokenUsage, usd: Double) {
        self.day = day
        self.agent = agent
        self.model = model
        self.calls = calls
        self.usage = usage
        self.usd = usd
    }

    /// The UTC day holding `time`, as `ledger_daily` names it.
    public static func name(of time: Timestamp) -> String {
        let ms = time.milliseconds
        let date = CivilDate(daysSinceEpoch: Int(ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000))
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(date.year, 4))-\(pad(date.month, 2))-\(pad(date.day, 2))"
    }
}

/// Which ledger entries to read.
public struct LedgerQuery: Sendable, Hashable {
    public var agent: ResourceID?
    public var since: Timestamp?
    public var limit: Int

    public init(agent: ResourceID? = nil, since: Timestamp? = nil, limit: Int = 1000) {
        self.agent = agent
        self.since = since
        self.limit = limit
    }
}

/// Spend per UTC day, summed by the store (the raw ledger and the daily roll-ups that
/// retention leaves), for views that chart it: reading every call would cost a
/// page its time budget.
public protocol SpendHistory: Sendable {
    /// Spend per day (days since the epoch) from `since` up to `until` (excluded; nil:
    /// no end), of one agent or of all.
    func dailySpend(since: Timestamp, until: Timestamp?, agent: ResourceID?) throws(StoreError) -> [Int: Charge]
}

extension SpendHistory {
    /// Spend per day from `since` on.
    public func dailySpend(since: Timestamp, agent: ResourceID?) throws(StoreError) -> [Int: Charge] {
        try dailySpend(since: since, until: nil, agent: agent)
    }
}
